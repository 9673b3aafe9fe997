"""The data vocabulary every stage shares: one definition each, imported everywhere else.

Image loading itself lives next door in ``vlft.data.images`` (``load_image``, ``image_problem``).
"""

from __future__ import annotations

import re
from typing import Any

# Files treated as images by folder sources, test.py folders and the assistant's drop zone.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Label value the loss ignores (PyTorch cross_entropy's default ignore_index).
IGNORE_INDEX = -100

# Why a CSV row / source record was skipped by the data stages (counted in this order; the first
# four are always shown in summaries, the others only when they occurred).
SKIP_REASONS = ("missing_image", "corrupt_image", "empty_caption", "duplicate", "special_token",
                "bad_caption_file")
ALWAYS_SHOWN_REASONS = SKIP_REASONS[:4]

# CJK ideographs (+ extension A, compatibility), kana, hangul: scripts written without spaces.
CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
CJK_RE = re.compile(f"[{CJK_CLASS}]")
# Han ideographs only (the characters jieba's dictionary has frequencies for).
HAN_RE = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")


def message_parts(message: dict) -> list[dict]:
    """A chat message's content as a list of parts (a plain string becomes one text part)."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content or [])


def message_text(message: dict) -> str:
    """Text of a message as the chat template renders it (text parts concatenated)."""
    return "".join(p.get("text", "") for p in message_parts(message) if isinstance(p, dict) and "text" in p)


def skip_counts(counts: Any, reasons: tuple[str, ...] = ALWAYS_SHOWN_REASONS) -> str:
    """``missing_image: 1, corrupt_image: 0, ...`` in the fixed order, then any other reason seen."""
    extra = sorted((k for k in counts if k not in reasons and counts[k]), key=lambda k: (
        SKIP_REASONS.index(k) if k in SKIP_REASONS else len(SKIP_REASONS), k))
    return ", ".join(f"{r}: {counts.get(r, 0)}" for r in (*reasons, *extra))


# Qwen chat/vision control tokens written as text ("<|im_end|>", "<|vision_start|>", ...): in a
# caption they are tokenized as the control token itself and end or corrupt the turn.
SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z_]{2,40}\|>")


def find_special_token(text: str) -> str | None:
    """The first control-token-looking string in ``text`` (None if there is none)."""
    m = SPECIAL_TOKEN_RE.search(text)
    return m.group(0) if m else None
