"""Shared fixtures: one tiny Qwen3-VL per session, the bundled COCO sample, offline env."""

from __future__ import annotations

import os

# Both cores busy + torch's own thread pool made tiny steps ~100x slower: one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("SWANLAB_MODE", "offline")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from vlft.paths import COCO_SAMPLE_DIR, REPO_DIR, shared_assets_dir  # noqa: E402

ARTIFACTS = REPO_DIR / "tests" / ".artifacts"  # git-ignored: screenshots, reports kept for a look


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The embedded default: tiny random-weight Qwen3-VL with the real tokenizer/template."""
    from vlft.models.tiny import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-vl"), family="qwen3-vl", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen25_dir(tmp_path_factory) -> Path:
    """Tiny Qwen2.5-VL from ../shared (research licence: read there, never copied in)."""
    if shared_assets_dir("qwen2.5-vl-3b-instruct") is None:
        pytest.skip("../shared/assets/qwen2.5-vl-3b-instruct not present")
    from vlft.models.tiny import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl"), family="qwen2.5-vl", seed=0)


@pytest.fixture(scope="session")
def coco_sample_dir() -> Path:
    """The bundled COCO sample: images/, captions.csv, captions_val2017_coco-mini.json."""
    return COCO_SAMPLE_DIR


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
