"""MoE-LoRA injection: wrap the targeted Linears of a model in place, and find them again.

Save/load live in ``io.py``, the aux loss and routing statistics in ``stats.py``, target selection
in ``targeting.py``; the adapter-method plug-in for training in ``method.py``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Iterator

import torch
from torch import nn

from vlft.tuners.moelora.config import MoeLoraConfig
from vlft.tuners.moelora.layer import MoeLoraLinear, MoeRouted, RoutingContext
from vlft.tuners.moelora.targeting import _modules_to_save, find_target_modules

_CONFIG_ATTR = "moelora_config"        # set on the model by apply_moelora
_CONTEXT_ATTR = "_moelora_context"
_ADAPTER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                   "base": None}


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
