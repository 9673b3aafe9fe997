"""MoE-LoRA targeting: which Linear modules a config selects (and which modules_to_save)."""

from __future__ import annotations

import re
from typing import Iterable

from torch import nn

from vlft.config import ConfigError
from vlft.tuners.moelora.config import MoeLoraConfig


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
