"""MoE-LoRA readouts during training: the router load-balancing loss, routing statistics, parameter counts."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from typing import Any, Iterable

import torch
from torch import nn

from vlft.tuners.moelora.config import MoeLoraConfig
from vlft.tuners.moelora.layer import MoeLoraLinear, switch_loss
from vlft.tuners.moelora.model import get_moelora_config, moelora_layers, routed_layers, routing_contexts

log = logging.getLogger(__name__)
_warned = {"no_grad_aux": False}


def moelora_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """MEAN over MoE-LoRA layers of the last training forward's load-balancing loss.

    When the layers apply its gradient in backward (``aux_in_backward``, the default of
    ``apply_moelora`` with a coefficient) the value is detached, to log, not to add; it is then
    recorded on statistics forwards only (``set_moelora_stats``), and this is None after others.

    The mean (not the sum) keeps the value ~1.0 at perfectly even routing whatever the number of
    targeted layers, so ``router_aux_loss_coef`` means the same for q,v-only and all-linear runs.
    None when the last forward recorded nothing (eval, or no training forward yet). With
    ``aux_coef == 0`` it keeps its graph: multiply by the coef and add it to the LM loss.
    """
    layers = [m for m in routed_layers(model).values() if m.router_P is not None]
    if not layers:
        return None
    if len({m.router_P.shape for m in layers}) == 1:  # one batched Switch loss over all layers
        aux = switch_loss(torch.stack([m.router_P for m in layers]),
                          torch.stack([m.router_f for m in layers])).mean()
    else:  # layers with different E (several PEFT adapters)
        aux = torch.stack([switch_loss(m.router_P, m.router_f) for m in layers]).mean()
    if (torch.is_grad_enabled() and not aux.requires_grad and not _warned["no_grad_aux"]
            and not any(m.context.aux_coef > 0 for m in layers)):
        _warned["no_grad_aux"] = True
        log.warning("MoE-LoRA: the router aux loss has no gradient: reentrant gradient checkpointing runs "
                    "the forward under no_grad; use gradient_checkpointing_kwargs={'use_reentrant': False}")
    return aux


def _group_name(name: str, by: str) -> str:
    tower = "vision" if ".visual." in f".{name}." else "lm"
    m = re.search(r"\.(?:layers|blocks)\.(\d+)\.(.+)$", name)
    proj = m.group(2) if m else name.split(".")[-1]
    if by == "layer" and m:
        return f"{tower}.{m.group(1)}"
    return f"{tower}.{proj}"


def moelora_stats(model: nn.Module, by: str = "proj", prefix: str = "moe") -> dict[str, float]:
    """Flat {name: float} of the last training forward's routing, averaged per layer group.

    ``by="proj"`` groups e.g. every layer's q_proj (``moe/lm.self_attn.q_proj/load_e0`` ... ``/entropy``);
    ``by="layer"`` groups per layer index (``moe/lm.3/...``). Also ``moe/aux_loss`` (mean over layers),
    ``moe/load_max`` (largest expert share in any layer: 1/E is even, k/E.. means collapse) and
    ``moe/entropy``. One host sync for the whole dict; call it every logging step, not every step.
    """
    layers = [(n, m) for n, m in routed_layers(model).items() if m.load_fraction is not None]
    if not layers:
        return {}
    loads = torch.stack([m.load_fraction.float() for _, m in layers]).cpu()
    ents = torch.stack([m.router_entropy.float() for _, m in layers]).cpu()
    has_aux = any(m.router_P is not None for m in routed_layers(model).values())
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (n, _) in enumerate(layers):
        groups[_group_name(n, by)].append(i)
    out: dict[str, float] = {}
    for g, idx in sorted(groups.items()):
        gl = loads[idx].mean(0)
        for e, v in enumerate(gl.tolist()):
            out[f"{prefix}/{g}/load_e{e}"] = v
        out[f"{prefix}/{g}/entropy"] = ents[idx].mean().item()
    out[f"{prefix}/load_max"] = loads.max().item()
    out[f"{prefix}/entropy"] = ents.mean().item()
    if has_aux:
        with torch.no_grad():
            out[f"{prefix}/aux_loss"] = moelora_aux_loss(model).item()
    return out


def set_moelora_stats(model: nn.Module, enabled: bool = True, every: int = 1, in_eval: bool = False) -> None:
    """Routing statistics on/off, or on every ``every``-th training forward only (e.g. once per
    logging step: every = logging_steps * gradient_accumulation_steps). The aux loss is always
    computed in training. ``in_eval`` also records them in eval mode (routing analysis)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    for ctx in routing_contexts(model):
        ctx.collect_stats, ctx.stats_every, ctx.collect_eval_stats = enabled, every, in_eval
        ctx.stats_now = enabled and ctx.forward_count % every == 0


# -- parameter counts --------------------------------------------------------------------------
def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters: the project's one counter (vlft.adapters.registry.count_parameters)."""
    from vlft.adapters.registry import count_parameters
    return count_parameters(model)


def expected_trainable_params(config: MoeLoraConfig, targeted_linears: Iterable[Any]) -> int:
    """Sum over targeted Linear(in, out) of E*r*(in+out) + in*E (+E with router_bias).

    ``targeted_linears``: (in, out) pairs, nn.Linear or MoeLoraLinear modules. modules_to_save are
    not included (they are whole modules, counted by count_trainable).
    """
    total = 0
    for t in targeted_linears:
        fin, fout = (t.in_features, t.out_features) if hasattr(t, "in_features") else t
        total += MoeLoraLinear.expected_params(fin, fout, config.r, config.num_experts, config.router_bias)
    return total


def moelora_summary(model: nn.Module) -> str:
    """One line for logs: layers, settings, trainable/total and the formula's count."""
    config = get_moelora_config(model)
    layers = moelora_layers(model)
    groups: dict[str, int] = defaultdict(int)
    for n in layers:
        groups[_group_name(n, "proj")] += 1
    trainable, total = count_trainable(model)
    formula = expected_trainable_params(config, layers.values())
    where = ", ".join(f"{g} x{c}" for g, c in sorted(groups.items()))
    return (f"MoE-LoRA: {len(layers)} layers ({where}); E={config.num_experts} top-{config.top_k} "
            f"r={config.r} alpha={config.lora_alpha:g} | trainable params: {trainable:,} / {total:,} "
            f"({100 * trainable / max(total, 1):.4f}%) | formula E*r*(in+out)+in*E: {formula:,}")
