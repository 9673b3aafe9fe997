"""Fixtures shared by the inference, adapter-loading, export and evaluation tests."""

from __future__ import annotations

import pytest

from vlft.adapters.testing import cached_dir, make_peaked_model, make_random_adapter


@pytest.fixture(scope="session")
def peaked_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model with sharper weights, so greedy output depends on the input."""
    return cached_dir(tmp_path_factory.getbasetemp(), "peaked-tiny",
                      lambda p: make_peaked_model(tiny_model_dir, p))


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory, peaked_dir):
    """A random (non-zero) LoRA adapter for ``peaked_dir``."""
    return cached_dir(tmp_path_factory.getbasetemp(), "adapter-lora",
                      lambda p: make_random_adapter(peaked_dir, p, "lora", seed=1))
