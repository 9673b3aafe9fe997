"""Shared helpers for the training tests (imported by name: tests have no packages)."""

from __future__ import annotations

from pathlib import Path

# 64x64-pixel images keep every forward to a handful of image tokens.
TINY_PIXELS = 64 * 64
CAPTIONS = ["A small dog runs across the green grass.", "Two cats sleep on a red sofa.",
            "A man rides a bicycle down a busy street.", "A plate of rice and beans on a table."]


def caption_sample(i: int, image: Path, caption: str, prompt: str = "COCO Yes:") -> dict:
    return {"id": f"cap{i}", "messages": [
        {"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": caption}]}]}
