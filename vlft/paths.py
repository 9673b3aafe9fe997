"""Where the project's bundled files live, and the optional ../shared assets."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
QWEN3_VL_ASSETS = PACKAGE_DIR / "assets" / "qwen3-vl-4b-instruct"
COCO_SAMPLE_DIR = REPO_DIR / "data" / "coco_sample"
# The embedded default model is built here on first use (git-ignored).
DEFAULT_TINY_DIR = REPO_DIR / "output" / "tiny-qwen3-vl"
DEFAULT_CAPTION_PROMPT = "COCO Yes:"


def shared_assets_dir(name: str = "") -> Path | None:
    """``../shared/assets/<name>`` next to the checkout (or $VLFT_SHARED_ASSETS), if present."""
    roots = [os.environ.get("VLFT_SHARED_ASSETS"), REPO_DIR.parent / "shared" / "assets"]
    for root in roots:
        if root and (Path(root) / name).exists():
            return Path(root) / name
    return None
