"""Inject MoE-LoRA into a model, save/load it PEFT-style, and read its aux loss and routing stats.

Files written by ``save_moelora`` (PEFT's layout, so the folder looks like any adapter):
    adapter_config.json        MoeLoraConfig + "peft_type": "MOELORA", "moelora_version"
    adapter_model.safetensors  base_model.model.<module>.lora_expert_A     (E*r, in)
                               base_model.model.<module>.lora_expert_B     (out, E*r)
                               base_model.model.<module>.lora_router.weight (E, in)
                               base_model.model.<module>.<param>  for modules_to_save
Only adapter, router and modules_to_save tensors are stored, never base weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from vlft.config import ConfigError
from vlft.tuners.moelora.config import CONFIG_NAME, WEIGHTS_NAME, MoeLoraConfig, is_moelora_dir
from vlft.tuners.moelora.layer import MoeLoraLinear, MoeRouted, RoutingContext, switch_loss

log = logging.getLogger(__name__)
_warned = {"no_grad_aux": False}
KEY_PREFIX = "base_model.model."      # PEFT's prefix for adapter keys
_CONFIG_ATTR = "moelora_config"        # set on the model by apply_moelora
_CONTEXT_ATTR = "_moelora_context"
_ADAPTER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                   "base": None}


class AdapterLoadError(RuntimeError):
    """The adapter folder does not fit the model (missing keys, wrong shapes, unknown modules)."""


# -- targeting ---------------------------------------------------------------------------------
def _generic(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".N", name)


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]


def _name_examples(names: Iterable[str], limit: int = 16) -> str:
    """Distinct names with layer numbers as N, language model first (what users usually target)."""
    seen: list[str] = []
    for n in names:
        g = _generic(n)
        if g not in seen:
            seen.append(g)
    seen.sort(key=lambda g: "visual" in g or "vision" in g)  # stable: keeps model order within each
    more = f", ... ({len(seen) - limit} more)" if len(seen) > limit else ""
    return ", ".join(seen[:limit]) + more


def _match(name: str, spec: list[str] | str) -> bool:
    if spec == "all-linear":
        return True
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == t or name.endswith("." + t) for t in spec)


def find_target_modules(model: nn.Module, target_modules: list[str] | str,
                        exclude_modules: list[str] | str | None = None) -> list[str]:
    """Dotted names of the Linear modules that ``target_modules`` selects, ``exclude_modules`` removed.

    A list entry matches a name equal to it or ending in ``.<entry>`` (PEFT's rule); a string is a
    regex matched against the full name; 'all-linear' takes every Linear but the output head.
    Raises ConfigError when any list entry (or the regex) matches no Linear.
    """
    linears = _linear_names(model)
    if isinstance(target_modules, str) and target_modules != "all-linear":
        try:
            re.compile(target_modules)
        except re.error as e:
            raise ConfigError(f"target_modules: {target_modules!r} is not a valid regex ({e})") from None
    patterns = target_modules if isinstance(target_modules, list) else [target_modules]
    for p in patterns:
        spec = [p] if isinstance(target_modules, list) else p
        if not any(_match(n, spec) for n in linears):
            raise ConfigError(
                f"target_modules: {p!r} matches no Linear module in {type(model).__name__} "
                f"(Linear names look like: {_name_examples(linears)})")
    chosen = [n for n in linears if _match(n, target_modules)]
    if target_modules == "all-linear":
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        chosen = [n for n in chosen if model.get_submodule(n) is not head and n.split(".")[-1] != "lm_head"]
    if exclude_modules:
        chosen = [n for n in chosen if not _match(n, exclude_modules)]
    if not chosen:
        raise ConfigError(f"target_modules: {target_modules!r} minus exclude_modules {exclude_modules!r} "
                          "leaves no module to adapt")
    return chosen


# -- injection ---------------------------------------------------------------------------------
def apply_moelora(model: nn.Module, config: MoeLoraConfig,
                  module_names: list[str] | None = None) -> nn.Module:
    """In place: freeze the model, wrap each targeted Linear in a MoeLoraLinear, return the model.

    ``module_names`` (exact dotted names) overrides the config's patterns; the loader uses it.
    With ``config.router_aux_loss_coef`` > 0 the load-balancing gradient is applied inside each
    layer's backward (``set_moelora_aux``): do not add ``coef * moelora_aux_loss(model)`` to the
    loss yourself (it would add nothing: that value is then detached, for logging only).
    """
    if any(isinstance(m, MoeLoraLinear) for m in model.modules()):
        raise ValueError("model already has MoE-LoRA layers; load adapters onto a fresh base model")
    names = module_names if module_names is not None else find_target_modules(
        model, config.target_modules, config.exclude_modules)
    save_names = _modules_to_save(model, config)   # resolved (and checked) before anything changes
    gen = torch.Generator().manual_seed(config.init_seed) if config.init_seed is not None else None
    ctx, created = RoutingContext(), []
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        layer = MoeLoraLinear(base, r=config.r, lora_alpha=config.lora_alpha, num_experts=config.num_experts,
                              top_k=config.top_k, lora_dropout=config.lora_dropout,
                              router_bias=config.router_bias, router_init_scale=config.router_init_scale,
                              adapter_dtype=_ADAPTER_DTYPES[config.adapter_dtype], generator=gen, context=ctx)
        setattr(parent, child, layer)
        created.append(layer)
    ctx.attach(created)
    for name in save_names:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    setattr(model, _CONFIG_ATTR, config)
    setattr(model, _CONTEXT_ATTR, ctx)
    ctx.aux_coef, ctx.n_layers = float(config.router_aux_loss_coef), len(names)
    _mask_hook_target(model).register_forward_pre_hook(_capture_mask(ctx), with_kwargs=True)
    return model


def _mask_hook_target(model: nn.Module) -> nn.Module:
    """The Qwen-VL inner model (``model.model``) when there is one: the fast loss path
    (vlft.train.fast.lm_loss) calls it directly, and the top model's forward passes
    ``attention_mask`` to it by keyword, so one hook there sees every forward."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "language_model") else model


def set_moelora_aux(model: nn.Module, coef: float | None = None, grad_scale: Any = None) -> None:
    """Configure the in-backward load-balancing gradient of every MoE-LoRA layer in ``model``.

    ``coef``: the aux-loss weight (0 = off: ``moelora_aux_loss`` then keeps its graph and the caller
    adds ``coef * aux`` to the loss the old way). ``grad_scale``: what the LM loss is multiplied by
    before ``backward`` (float, or a zero-argument callable evaluated in backward), e.g.
    ``1 / gradient_accumulation_steps``. Either left as None is kept as it is.
    """
    layers = list(routed_layers(model).values())
    for ctx in routing_contexts(model, layers):
        ctx.n_layers = len(layers)
        if coef is not None:
            if coef < 0:
                raise ValueError(f"coef must be >= 0, got {coef}")
            ctx.aux_coef = float(coef)
        if grad_scale is not None:
            ctx.aux_grad_scale = grad_scale
            ctx.scale_now = ctx.backward_scale()  # until the next model forward's pre-hook reads it


def routing_contexts(model: nn.Module, layers: list | None = None) -> list[RoutingContext]:
    """The distinct RoutingContexts of the model's MoE-LoRA layers (one per applied adapter)."""
    layers = list(routed_layers(model).values()) if layers is None else layers
    if not layers:
        raise ValueError("model has no MoE-LoRA adapter")
    return list({id(m.context): m.context for m in layers}.values())


def aux_in_backward(model: nn.Module) -> bool:
    """True when the model's MoE-LoRA layers apply the aux-loss gradient in their own backward."""
    return any(m.context.aux_coef > 0 for m in routed_layers(model).values())


def _capture_mask(ctx: RoutingContext):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        ctx.set_mask(kwargs.get("attention_mask"))
        ctx.start_forward(module.training)
    return hook


def _modules_to_save(model: nn.Module, config: MoeLoraConfig) -> list[str]:
    if not config.modules_to_save:
        return []
    names = [n for n, _ in model.named_modules() if n]
    out = []
    for t in config.modules_to_save:
        hits = [n for n in names if n == t or n.endswith("." + t)]
        if not hits:
            raise ConfigError(f"modules_to_save: {t!r} matches no module (names look like: "
                              f"{_name_examples(names)})")
        out += [h for h in hits if h not in out]
    return out


def moelora_layers(model: nn.Module) -> "OrderedDict[str, MoeLoraLinear]":
    return OrderedDict((n, m) for n, m in model.named_modules() if isinstance(m, MoeLoraLinear))


def routed_layers(model: nn.Module) -> "OrderedDict[str, MoeRouted]":
    """Every MoE-LoRA layer, ours or PEFT-registered (peft_compat), for aux loss and stats."""
    return OrderedDict((n, m) for n, m in model.named_modules() if isinstance(m, MoeRouted))


def get_moelora_config(model: nn.Module) -> MoeLoraConfig:
    cfg = getattr(model, _CONFIG_ATTR, None)
    if cfg is None:
        raise ValueError("model has no MoE-LoRA adapter (call apply_moelora or load_moelora first)")
    return cfg


# -- save / load -------------------------------------------------------------------------------
def moelora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter + router (+ modules_to_save) tensors under PEFT-style keys, detached CPU copies."""
    # clone: tied weights share storage, which safetensors refuses
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in moelora_state_dict_refs(model).items()}


def save_moelora(model: nn.Module, directory: str | Path) -> Path:
    """Write adapter_config.json and adapter_model.safetensors into ``directory`` (atomically)."""
    from safetensors.torch import save_file

    config = get_moelora_config(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if config.base_model_name_or_path is None:
        base = (getattr(getattr(model, "config", None), "_name_or_path", None)
                or getattr(model, "name_or_path", None))
        config = config.replace(base_model_name_or_path=str(base) if base else None)
    tensors = moelora_state_dict(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "peft_type": "MOELORA"})
        from vlft.utils.io import current_umask
        os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp's 0600 would hide it from other users
        os.replace(tmp, directory / WEIGHTS_NAME)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    config.save(directory)
    return directory


def load_moelora(model: nn.Module, directory: str | Path, is_trainable: bool = False) -> nn.Module:
    """Attach a saved MoE-LoRA adapter to a FRESH base model (in place) and return it.

    Validates everything before touching weights: one AdapterLoadError naming the folder and the
    first module that does not fit. ``is_trainable=False`` freezes the adapter and sets eval mode.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config = MoeLoraConfig.load(directory)
    wpath = directory / WEIGHTS_NAME
    if not wpath.is_file():
        raise AdapterLoadError(f"{directory}: {WEIGHTS_NAME} is missing; the adapter folder is incomplete")
    state = load_file(str(wpath))
    expert_modules = sorted({k[len(KEY_PREFIX):].rsplit(".lora_expert_A", 1)[0]
                             for k in state if k.endswith(".lora_expert_A")})
    if not expert_modules:
        raise AdapterLoadError(f"{directory}: {WEIGHTS_NAME} holds no MoE-LoRA expert weights")
    names = dict(model.named_modules())
    for n in expert_modules:
        if not isinstance(names.get(n), nn.Linear):
            raise AdapterLoadError(
                f"{directory}: module {n} is not a Linear in this {type(model).__name__} "
                f"(adapter trained on {config.base_model_name_or_path}?); Linear names here look like: "
                f"{_name_examples(_linear_names(model), 5)}")
    # Check keys and shapes against the bare model before wrapping anything: a failed load
    # leaves the model as it was.
    _check_state(_expected_shapes(model, expert_modules, config), state, directory,
                 config.base_model_name_or_path)
    apply_moelora(model, config, module_names=expert_modules)
    _copy_checked(model, state, directory, config.base_model_name_or_path)
    for p in _trainable_refs(model):
        p.requires_grad_(is_trainable)
    if not is_trainable:
        model.eval()
    return model


def load_moelora_weights(model: nn.Module, directory: str | Path) -> nn.Module:
    """Copy a saved adapter's tensors into a model that already has the same MoE-LoRA (e.g. resume).

    Same validation as load_moelora; requires_grad and train/eval mode are left as they are.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    wpath = directory / WEIGHTS_NAME
    if not wpath.is_file():
        raise AdapterLoadError(f"{directory}: {WEIGHTS_NAME} is missing; the adapter folder is incomplete")
    _copy_checked(model, load_file(str(wpath)), directory, get_moelora_config(model).base_model_name_or_path)
    return model


def _expected_shapes(model: nn.Module, expert_modules: list[str], config: MoeLoraConfig) -> dict[str, tuple]:
    """Key -> shape the adapter file must hold for these (still bare) Linears and modules_to_save."""
    E, r = config.num_experts, config.r
    out: dict[str, tuple] = {}
    for n in expert_modules:
        lin = model.get_submodule(n)
        out.update({f"{KEY_PREFIX}{n}.lora_expert_A": (E * r, lin.in_features),
                    f"{KEY_PREFIX}{n}.lora_expert_B": (lin.out_features, E * r),
                    f"{KEY_PREFIX}{n}.lora_router.weight": (E, lin.in_features)})
        if config.router_bias:
            out[f"{KEY_PREFIX}{n}.lora_router.bias"] = (E,)
    for name in _modules_to_save(model, config):
        for k, t in model.get_submodule(name).named_parameters():
            out[f"{KEY_PREFIX}{name}.{k}"] = tuple(t.shape)
    return out


def _check_state(expected: dict[str, tuple], state: dict[str, torch.Tensor], directory: Path,
                 trained_on: Any) -> None:
    """One AdapterLoadError naming the folder and the first key that is missing, extra or misshapen."""
    for k in sorted(set(expected) | set(state)):
        if k not in state:
            raise AdapterLoadError(f"{directory}: {k} is missing from {WEIGHTS_NAME}")
        if k not in expected:
            raise AdapterLoadError(f"{directory}: {k} in {WEIGHTS_NAME} has no place in this model "
                                   f"(config and weights disagree)")
        if tuple(state[k].shape) != tuple(expected[k]):
            raise AdapterLoadError(
                f"{directory}: {k[len(KEY_PREFIX):]} has shape {tuple(state[k].shape)} in the adapter but "
                f"this model needs {tuple(expected[k])} (adapter trained on {trained_on}?)")


def _copy_checked(model: nn.Module, state: dict[str, torch.Tensor], directory: Path, trained_on: Any) -> None:
    """Validate every key and shape first, then copy into the live parameters."""
    expected = moelora_state_dict_refs(model)
    _check_state({k: tuple(v.shape) for k, v in expected.items()}, state, directory, trained_on)
    with torch.no_grad():
        for k, t in expected.items():
            t.copy_(state[k].to(device=t.device, dtype=t.dtype))


def moelora_state_dict_refs(model: nn.Module) -> dict[str, torch.Tensor]:
    """Like moelora_state_dict but the live parameters themselves (for loading in place)."""
    config = get_moelora_config(model)
    sd: dict[str, torch.Tensor] = {}
    for name, layer in moelora_layers(model).items():
        for k, t in layer.adapter_state_dict().items():
            sd[f"{KEY_PREFIX}{name}.{k}"] = t
    for name in _modules_to_save(model, config):
        for k, t in model.get_submodule(name).named_parameters():
            sd[f"{KEY_PREFIX}{name}.{k}"] = t
    return sd


def _trainable_refs(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in moelora_state_dict_refs(model).values() if isinstance(p, nn.Parameter)]


# -- training-time readouts --------------------------------------------------------------------
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


@contextlib.contextmanager
def moelora_disabled(model: nn.Module) -> Iterator[None]:
    """Run the bare base model (e.g. for reference logits) inside the block."""
    layers = list(moelora_layers(model).values())
    for m in layers:
        m.adapter_enabled = False
    try:
        yield
    finally:
        for m in layers:
            m.adapter_enabled = True


# -- parameter counts --------------------------------------------------------------------------
def _numel(p: torch.Tensor) -> int:
    if p.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte
        return p.numel() * 2 * getattr(getattr(p, "quant_storage", torch.uint8), "itemsize", 1)
    return p.numel()


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights counted unpacked, shared tensors once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = _numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


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


__all__ = [
    "AdapterLoadError", "apply_moelora", "save_moelora", "load_moelora", "load_moelora_weights",
    "moelora_aux_loss", "moelora_stats", "routing_contexts", "count_trainable", "expected_trainable_params", "moelora_summary",
    "moelora_layers", "routed_layers", "find_target_modules",
    "set_moelora_stats", "moelora_disabled", "set_moelora_aux", "aux_in_backward", "moelora_state_dict", "get_moelora_config", "is_moelora_dir",
    "CONFIG_NAME", "WEIGHTS_NAME",
]
