"""Lenient parsing of model replies: small models wrap JSON in prose, fences or <tool_call> tags."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_TRUE = {"true", "yes", "y", "1", "是", "需要", "要"}
_FALSE = {"false", "no", "n", "0", "否", "不需要", "不要"}


def find_json_object(text: str) -> dict[str, Any] | None:
    """The first ``{...}`` in ``text`` that parses as a JSON object (fenced blocks first)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for cand in candidates:
        for start in [i for i, c in enumerate(cand) if c == "{"][:20]:
            depth, in_str, esc = 0, False, False
            for j in range(start, len(cand)):
                c = cand[j]
                if in_str:
                    esc = (c == "\\") and not esc
                    if c == '"' and not esc:
                        in_str = False
                    continue
                if c == '"':
                    in_str = True
                elif c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        try:
                            obj = json.loads(cand[start:j + 1])
                        except ValueError:
                            break
                        if isinstance(obj, dict):
                            return obj
                        break
    return None


def as_bool(value: Any) -> bool | None:
    """``True``/``False`` for the usual spellings (English and Chinese), else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    return None


def clean_line(text: str, limit: int = 200) -> str:
    """One printable line, trimmed to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line[:limit]


def looks_like_text(s: str, min_letters: int = 2) -> bool:
    """Rejects the tiny random model's output of stray symbols; accepts words in any script."""
    letters = sum(1 for c in s if c.isalpha())
    return letters >= min_letters and letters >= 0.4 * len(s.replace(" ", ""))
