"""The adapter-method table: what training, DDP and export read from each method."""

from __future__ import annotations

import pytest

from vlft.adapters.methods import METHODS, NO_HOOKS, AdapterMethod, get_method
from vlft.adapters.registry import AdapterError, AdapterSpec


def test_every_method_says_what_training_ddp_and_export_need():
    props = {name: (m.mergeable, m.ddp_find_unused_parameters) for name in METHODS for m in [get_method(name)]}
    assert props == {"lora": (True, False), "dora": (True, False), "ia3": (True, False), "moelora": (False, True)}
    assert all(isinstance(get_method(n), AdapterMethod) and get_method(n).name == n for n in METHODS)


def test_unknown_method_is_one_line():
    with pytest.raises(AdapterError, match="^adapter: 'qlora2' is not one of lora, dora, ia3, moelora$"):
        get_method("qlora2")


def test_peft_methods_add_no_training_hooks_and_moelora_brings_its_own(tiny_model_dir):
    from vlft.models.loading import load_model, resolve_precision
    from vlft.train.config import MoeLoraOptions

    assert get_method("lora").training_hooks(None, AdapterSpec()) is NO_HOOKS
    spec = AdapterSpec(targets="q_proj,v_proj", r=4, alpha=8, options=MoeLoraOptions(router_aux_loss_coef=0.3))
    method = get_method("moelora")
    model = method.build(load_model(tiny_model_dir, resolve_precision("none", device="cpu")), spec)
    hooks = method.training_hooks(model, spec)
    assert hooks.coef == 0.3 and hooks.extra_loss_name == "moe/aux_loss"
    hooks.bind(model, lambda: 0.5)  # the in-backward router gradient, scaled like the LM loss
    assert hooks.extra_loss(model) is None  # no training forward yet
    assert getattr(model, "_hf_peft_config_loaded", False)  # quantized-training guard sees an adapter
