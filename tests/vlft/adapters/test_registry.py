"""Target resolution uses real Qwen3-VL module names; a pattern that matches nothing is an error."""

from __future__ import annotations

import re

import pytest

from vlft.adapters.methods import METHODS as ADAPTERS
from vlft.adapters.registry import (AdapterError, AdapterSpec, apply_adapter, count_parameters,
                                    exact_target_regex, names_to_regex, resolve_target_modules)


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    from vlft.models.loading import load_model, resolve_precision
    return load_model(tiny_model_dir, resolve_precision("none", device="cpu"))


def test_default_targets_are_language_attention_only(base):
    names = resolve_target_modules(base, "q_proj,k_proj,v_proj,o_proj")
    assert len(names) == 2 * 4  # 2 text layers x q/k/v/o
    assert all(re.fullmatch(r"model\.language_model\.layers\.\d\.self_attn\.[qkvo]_proj", n) for n in names)


def test_all_means_every_language_linear_and_never_vision_or_head(base):
    names = resolve_target_modules(base, "all")
    assert len(names) == 2 * 7  # q,k,v,o,gate,up,down
    assert not any("visual" in n or n == "lm_head" for n in names)


def test_dotted_names_and_regex_reach_the_vision_tower(base):
    qkv = resolve_target_modules(base, "attn.qkv")
    assert qkv == ["model.visual.blocks.0.attn.qkv", "model.visual.blocks.1.attn.qkv"]
    fc = resolve_target_modules(base, r"model\.visual\.blocks\.\d+\.mlp\.linear_fc[12]")
    assert len(fc) == 4


@pytest.mark.parametrize("spec", ["visual_q_proj", "q_proj,visual_k_proj", r"model\.vision\..*"])
def test_target_matching_nothing_is_an_error_naming_it(base, spec):
    bad = spec.split(",")[-1]
    with pytest.raises(AdapterError, match=re.escape(repr(bad))):
        resolve_target_modules(base, spec)


def test_compact_regex_selects_exactly_the_resolved_set(base):
    for spec in ("q_proj,v_proj", "all", "attn.qkv,o_proj"):
        names = resolve_target_modules(base, spec)
        rx = exact_target_regex(base, names)
        assert {n for n, _ in base.named_modules() if re.fullmatch(rx, n)} == set(names)
    assert names_to_regex(["a.layers.0.q", "a.layers.1.q", "a.layers.1.k"]) == r"a\.layers\.\d+\.(?:q|k)"


def test_unknown_adapter_name_is_an_error(base):
    with pytest.raises(AdapterError, match="'qlora2'"):
        apply_adapter(base, "qlora2", AdapterSpec())
    assert set(ADAPTERS) == {"lora", "dora", "ia3", "moelora"}


@pytest.mark.parametrize("name", ["lora", "dora", "ia3"])
def test_peft_adapters_train_only_adapter_weights(tiny_model_dir, name):
    from vlft.models.loading import load_model, resolve_precision
    model = load_model(tiny_model_dir, resolve_precision("none", device="cpu"))
    model = apply_adapter(model, name, AdapterSpec(targets="q_proj,v_proj,down_proj", r=4, alpha=8))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n or "ia3_" in n) for n in trainable)
    assert not any("visual" in n for n in trainable)
    t, total = count_parameters(model)
    if name == "lora":  # r * (in + out) per targeted Linear
        lin = [m for n, m in model.named_modules() if n.endswith(("q_proj.base_layer", "v_proj.base_layer",
                                                                   "down_proj.base_layer"))]
        assert t == sum(4 * (m.in_features + m.out_features) for m in lin)
