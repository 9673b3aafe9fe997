"""Fixtures for the training tests: small caption sets from the real COCO sample, run configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train_helpers import CAPTIONS, TINY_PIXELS, caption_sample  # noqa: E402


@pytest.fixture(scope="session")
def coco_images(coco_sample_dir) -> list[Path]:
    return sorted((coco_sample_dir / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def caption_json(tmp_path_factory, coco_images) -> Path:
    """4 messages-format caption samples on real COCO images."""
    p = tmp_path_factory.mktemp("train-data") / "train.json"
    rows = [caption_sample(i, coco_images[i], c) for i, c in enumerate(CAPTIONS)]
    p.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def peaked_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Tiny model with text weights at std 0.3: the default 0.02 init + final RMSNorm keep logits
    near-uniform whatever an adapter does, so "loss goes down" needs a model that can peak."""
    from vlft.adapters.testing import make_peaked_model
    return make_peaked_model(tiny_model_dir, tmp_path_factory.mktemp("peaked"), std=0.3)


@pytest.fixture
def make_cfg(tiny_model_dir, caption_json, tmp_path):
    """TrainConfig factory with small, fast defaults (override any field)."""
    from vlft.train import TrainConfig

    def make(**kw):
        base = dict(model_name_or_path=str(tiny_model_dir), data_path=str(caption_json),
                    output_dir=str(tmp_path / "out"), max_pixels=TINY_PIXELS, min_pixels=32 * 32,
                    per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=2,
                    learning_rate=1e-3, warmup_ratio=0.0, logging_steps=1, save_strategy="no",
                    report_to="none", num_sample_predictions=0, seed=0)
        base.update(kw)
        return TrainConfig.from_dict(base)  # flat MoE-LoRA keys (top_k=...) go to the 'moelora' section
    return make


@pytest.fixture(scope="session")
def compile_cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture(autouse=True)
def _compile_cache_in_tmp(compile_cache_root, monkeypatch):
    """Runs that compile point PyTorch's caches at their compile cache folder (vlft.train.fast.cache):
    in tests that folder is a temporary one, never the user's ~/.cache, and the variables are restored."""
    import os
    monkeypatch.setenv("VLFT_COMPILE_CACHE", str(compile_cache_root))
    saved = {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
