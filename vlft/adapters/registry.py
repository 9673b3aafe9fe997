"""Adapter settings, target-module resolution with real module names, and the parameter counter.

Targets are resolved here once, against the real module tree, for every method (``all`` means
the same for LoRA, DoRA, IA3 and MoE-LoRA), so a pattern that matches nothing fails loudly (the
seed's ``visual_q_proj`` matched nothing and PEFT silently trained without it). The methods
themselves (name -> method) are in ``vlft.adapters.methods``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from vlft.errors import UserError

log = logging.getLogger(__name__)

# Language-model decoder layers: Qwen3-VL / Qwen2.5-VL in transformers 5.x
# (model.language_model.layers.N...). The vision tower lives under model.visual.
LANGUAGE_LAYER = re.compile(r"(^|\.)language_model\.layers\.\d+\.")
_REGEX_CHARS = set("\\^$*+?[](){}|")
# Feed-forward outputs: IA3 scales their input instead of their output.
FEEDFORWARD_SUFFIXES = ("down_proj", "linear_fc2", "fc2")


class AdapterError(UserError, ValueError):
    """Bad adapter settings (e.g. a target pattern that matches no module)."""


@dataclass(frozen=True)
class AdapterSpec:
    """What to attach, independent of the library that builds it."""
    targets: str = "q_proj,k_proj,v_proj,o_proj"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    options: Any = None  # the method's own options (e.g. vlft.train.config.MoeLoraOptions); None: its defaults


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


# -- building ------------------------------------------------------------------------------
def apply_adapter(model, name: str, spec: AdapterSpec):
    """Attach adapter method ``name`` (vlft.adapters.methods.METHODS) to ``model`` and return it."""
    from vlft.adapters.methods import get_method
    return get_method(name).build(model, spec)


def __getattr__(name: str):
    if name == "ADAPTERS":  # the name -> method table now lives in vlft.adapters.methods
        from vlft.adapters.methods import METHODS
        return METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, the one counter of the project: 4-bit weights count as
    their logical size (two values per stored byte), shared tensors once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2 * getattr(getattr(p, "quant_storage", None), "itemsize", 1)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
