"""load_adapter applies LoRA / DoRA / IA3 / MoE-LoRA and proves it; renamed-module, foreign and
missing adapters fail with one line instead of silently generating base-model text."""

from __future__ import annotations

import json

import pytest
import torch

from vlft.adapters.loading import AdapterLoadError, describe_adapter, load_adapter
from vlft.adapters.testing import cached_dir, make_random_adapter, rename_adapter_keys
from vlft.models.loading import load_model, resolve_precision



@pytest.fixture(scope="module")
def adapters(tmp_path_factory, peaked_dir):
    root = tmp_path_factory.getbasetemp()
    return {k: cached_dir(root, f"adapter-{k}", lambda p, k=k: make_random_adapter(peaked_dir, p, k, seed=1))
            for k in ("lora", "dora", "ia3")}


def _base(peaked_dir):
    return load_model(peaked_dir, resolve_precision("none", device="cpu"))


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


IDS = torch.tensor([[151644, 872, 198, 9707, 11, 1879, 374, 264, 8251, 13, 151645]])


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3"])
def test_peft_adapters_load_and_apply(kind, adapters, peaked_dir):
    info = describe_adapter(adapters[kind])
    assert info.type == kind and info.base_model == str(peaked_dir)
    assert "q_proj" in info.targets and (info.r == 8 if kind != "ia3" else info.r is None)
    base = _base(peaked_dir)
    before = _logits(base, IDS)
    model = load_adapter(base, adapters[kind])
    assert not torch.allclose(_logits(model, IDS), before, atol=1e-3)


def test_moelora_adapter_loads_through_the_tuner(tmp_path, peaked_dir):
    from vlft.tuners.moelora import MoeLoraConfig, apply_moelora, save_moelora

    m = apply_moelora(_base(peaked_dir), MoeLoraConfig(r=4, num_experts=3, top_k=2, target_modules=["q_proj", "v_proj"],
                                                       init_seed=0))
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    save_moelora(m, tmp_path / "moe")
    info = describe_adapter(tmp_path / "moe")
    assert info.type == "moelora" and info.extra["num_experts"] == 3 and not info.mergeable
    base = _base(peaked_dir)
    before = _logits(base, IDS)
    assert not torch.allclose(_logits(load_adapter(base, tmp_path / "moe"), IDS), before, atol=1e-3)


def test_renamed_module_adapter_fails_loudly(adapters, peaked_dir, tmp_path):
    """Saved when transformers called them model.layers.*: PEFT would load nothing and warn at most."""
    old = rename_adapter_keys(adapters["lora"], tmp_path / "old-names")
    with pytest.raises(AdapterLoadError) as e:
        load_adapter(_base(peaked_dir), old)
    msg = str(e.value)
    assert "\n" not in msg and str(old) in msg
    assert "did not apply" in msg and "model.language_model.layers" in msg


def test_foreign_adapter_fails_with_one_line(tmp_path, peaked_dir):
    """An adapter made for a base with other widths: a shape mismatch, reported as one line."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(peaked_dir)
    cfg.text_config.intermediate_size = 96  # gate/up/down_proj differ from this base's 128
    other = AutoModelForImageTextToText.from_config(cfg)
    foreign = make_random_adapter(other, tmp_path / "foreign", "lora", base_name="some/other-model")
    with pytest.raises(AdapterLoadError) as e:
        load_adapter(_base(peaked_dir), foreign)
    msg = str(e.value)
    assert "\n" not in msg
    assert "another base model" in msg and "some/other-model" in msg and "shape" in msg


def test_missing_or_incomplete_folder(tmp_path, peaked_dir):
    with pytest.raises(AdapterLoadError, match="adapter folder not found"):
        describe_adapter(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(AdapterLoadError, match="no adapter_model.safetensors"):
        load_adapter(_base(peaked_dir), tmp_path / "half")
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    with pytest.raises(AdapterLoadError, match="merged model goes to --model"):
        describe_adapter(tmp_path / "merged")
