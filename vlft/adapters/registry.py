"""Adapter name -> factory, and target-module resolution with real module names.

Every factory takes the base model plus an :class:`AdapterSpec` and returns the wrapped
model; the table :data:`ADAPTERS` is the only place that knows which library builds which
adapter. Targets are resolved here once, against the real module tree, so a pattern that
matches nothing fails loudly (the seed's ``visual_q_proj`` matched nothing and PEFT
silently trained without it).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

# Language-model decoder layers: Qwen3-VL / Qwen2.5-VL in transformers 5.x
# (model.language_model.layers.N...). The vision tower lives under model.visual.
LANGUAGE_LAYER = re.compile(r"(^|\.)language_model\.layers\.\d+\.")
_REGEX_CHARS = set("\\^$*+?[](){}|")
# Feed-forward outputs: IA3 scales their input instead of their output.
_FEEDFORWARD_SUFFIXES = ("down_proj", "linear_fc2", "fc2")


class AdapterError(ValueError):
    """Bad adapter settings (e.g. a target pattern that matches no module)."""


@dataclass(frozen=True)
class AdapterSpec:
    """What to attach, independent of the library that builds it."""
    targets: str = "q_proj,k_proj,v_proj,o_proj"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    num_experts: int = 4
    top_k: int = 2
    router_aux_loss_coef: float = 0.01


# -- target resolution ---------------------------------------------------------------------
def linear_module_names(model) -> list[str]:
    """Names of every Linear (plain or bitsandbytes, which subclass nn.Linear)."""
    import torch.nn as nn
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def resolve_target_modules(model, targets: str) -> list[str]:
    """Full names of the Linear modules selected by ``targets``.

    * ``all``: every Linear inside the language model's decoder layers (vision tower,
      merger and lm_head stay frozen).
    * ``q_proj,k_proj`` (comma list): each item matches names ending in ``.item``
      (dotted items like ``attn.qkv`` work); every item must match something.
    * anything with regex characters: ``re.fullmatch`` on the full module name.
    """
    spec = targets.strip()
    names = linear_module_names(model)
    if spec == "all":
        chosen = [n for n in names if LANGUAGE_LAYER.search(n)]
        if not chosen:
            raise AdapterError("lora_target_modules: 'all' found no Linear under language_model.layers.*")
        return chosen
    if any(c in _REGEX_CHARS for c in spec):
        try:
            pattern = re.compile(spec)
        except re.error as e:
            raise AdapterError(f"lora_target_modules: {spec!r} is not a valid regex ({e})") from None
        chosen = [n for n in names if pattern.fullmatch(n)]
        if not chosen:
            raise AdapterError(f"lora_target_modules: regex {spec!r} matches no Linear module "
                               f"(e.g. {_examples(names)})")
        return chosen
    chosen: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        hits = [n for n in names if n == item or n.endswith("." + item)]
        if not hits:
            raise AdapterError(f"lora_target_modules: {item!r} matches no Linear module "
                               f"(e.g. {_examples(names)})")
        chosen += [n for n in hits if n not in chosen]
    return sorted(chosen, key=names.index)


def _examples(names: list[str]) -> str:
    # One representative per distinct layer-free name, so the hint shows real spellings.
    seen: dict[str, str] = {}
    for n in names:
        seen.setdefault(re.sub(r"\.\d+\.", ".N.", n), n)
    return ", ".join(list(seen)[:8])


def names_to_regex(names: list[str]) -> str:
    """A compact regex that fullmatches exactly ``names`` (layer numbers folded to ``\\d+``).

    Stored in adapter_config.json instead of hundreds of full names; checked to select the
    same set, so the adapter reloads onto exactly the modules it was trained on.
    """
    groups: dict[str, list[str]] = {}  # folded prefix -> leaf names, in first-seen order
    for n in names:
        prefix, _, leaf = n.rpartition(".")
        p = re.sub(r"\.\d+(?=\.|$)", ".<N>", prefix)
        leaves = groups.setdefault(p, [])
        if leaf not in leaves:
            leaves.append(leaf)
    parts = []
    for prefix, leaves in groups.items():
        head = re.escape(prefix).replace("<N>", r"\d+") + r"\." if prefix else ""
        leaf = re.escape(leaves[0]) if len(leaves) == 1 else "(?:" + "|".join(map(re.escape, leaves)) + ")"
        parts.append(head + leaf)
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def exact_target_regex(model, names: list[str]) -> str:
    """``names_to_regex`` if it selects the same set on ``model``, else an explicit alternation."""
    regex = names_to_regex(names)
    pattern = re.compile(regex)
    if {n for n in linear_module_names(model) if pattern.fullmatch(n)} == set(names):
        return regex
    return "(?:" + "|".join(re.escape(n) for n in names) + ")"


# -- factories -----------------------------------------------------------------------------
def _lora_config(model, spec: AdapterSpec, use_dora: bool):
    from peft import LoraConfig, TaskType
    names = resolve_target_modules(model, spec.targets)
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=spec.r, lora_alpha=spec.alpha,
                      lora_dropout=spec.dropout, bias="none", use_dora=use_dora,
                      target_modules=exact_target_regex(model, names))


def _lora(model, spec: AdapterSpec):
    from peft import get_peft_model
    return get_peft_model(model, _lora_config(model, spec, use_dora=False))


def _dora(model, spec: AdapterSpec):
    from peft import get_peft_model
    return get_peft_model(model, _lora_config(model, spec, use_dora=True))


def _ia3(model, spec: AdapterSpec):
    from peft import IA3Config, TaskType, get_peft_model
    names = resolve_target_modules(model, spec.targets)
    ff = [n for n in names if n.rsplit(".", 1)[-1] in _FEEDFORWARD_SUFFIXES]
    cfg = IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=exact_target_regex(model, names),
                    feedforward_modules=exact_target_regex(model, ff) if ff else [])
    return get_peft_model(model, cfg)


def _moelora(model, spec: AdapterSpec):
    from vlft.tuners.moelora import MoeLoraConfig, apply_moelora
    names = resolve_target_modules(model, spec.targets)
    cfg = MoeLoraConfig(target_modules=exact_target_regex(model, names), r=spec.r,
                        lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        num_experts=spec.num_experts, top_k=spec.top_k,
                        router_aux_loss_coef=spec.router_aux_loss_coef)
    model = apply_moelora(model, cfg)
    # MoE-LoRA is injected in place (no PeftModel wrapper); this flag tells transformers'
    # quantized-training guard that the 4-bit base carries trainable adapters.
    model._hf_peft_config_loaded = True
    return model


AdapterFactory = Callable[[Any, AdapterSpec], Any]
ADAPTERS: dict[str, AdapterFactory] = {
    "lora": _lora,
    "dora": _dora,
    "ia3": _ia3,
    "moelora": _moelora,
}


def apply_adapter(model, name: str, spec: AdapterSpec):
    """Attach adapter ``name`` to ``model`` (base weights frozen) and return the wrapped model."""
    if name not in ADAPTERS:
        raise AdapterError(f"adapter: {name!r} is not one of {', '.join(ADAPTERS)}")
    return ADAPTERS[name](model, spec)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored uint8
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
