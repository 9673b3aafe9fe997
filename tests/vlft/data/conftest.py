"""Fixtures for the data-stage tests: bad images made from the real COCO sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def coco_images(coco_sample_dir) -> list[Path]:
    return sorted((coco_sample_dir / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def coco_annotations(coco_sample_dir) -> dict:
    return json.loads((coco_sample_dir / "captions_val2017_coco-mini.json").read_text(encoding="utf-8"))


@pytest.fixture
def truncated_jpeg(tmp_path, coco_images) -> Path:
    """A real COCO JPEG cut at 40 %: the header parses, the pixels do not all decode."""
    data = coco_images[0].read_bytes()
    p = tmp_path / "bad" / "truncated.jpg"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data[: int(len(data) * 0.4)])
    return p


@pytest.fixture
def caption_folder(tmp_path, coco_images) -> Path:
    """A --folder source: 3 good images with sidecar captions, plus every kind of bad input."""
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    for i, src in enumerate(coco_images[:3]):
        dest = (d / "sub" if i == 2 else d) / src.name
        shutil.copyfile(src, dest)
        dest.with_suffix(".txt").write_text(f"caption {i} line one\ncaption {i} line two\n", encoding="utf-8")
    data = coco_images[3].read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "truncated.txt").write_text("cut off\n", encoding="utf-8")
    (d / "notimage.jpg").write_text("this is text, not a JPEG", encoding="utf-8")
    (d / "notimage.txt").write_text("looks like an image\n", encoding="utf-8")
    shutil.copyfile(coco_images[4], d / "nocaption.jpg")
    (d / "nocaption.txt").write_text("   \n\n", encoding="utf-8")
    (d / "orphan.txt").write_text("a caption whose image is gone\n", encoding="utf-8")
    shutil.copyfile(coco_images[5], d / "dupe.jpg")
    (d / "dupe.txt").write_text("same words\nsame  words\n", encoding="utf-8")
    return d
