"""Mixture-of-Experts LoRA: E LoRA experts per Linear mixed by a token-level top-k router.

    from vlft.tuners.moelora import MoeLoraConfig, apply_moelora, moelora_aux_loss, save_moelora
    cfg = MoeLoraConfig(r=8, num_experts=4, top_k=2, target_modules=["q_proj", "v_proj"])
    model = apply_moelora(model, cfg)
    loss = out.loss          # the router aux-loss gradient (coef * aux) is applied inside each
                             # layer's backward; moelora_aux_loss(model) is its detached value, to log
                             # (recorded on statistics forwards: set_moelora_stats)
    save_moelora(model, "output/run"); load_moelora(fresh_model, "output/run")
"""

from vlft.tuners.moelora.config import CONFIG_NAME, MOELORA_VERSION, PEFT_TYPE, WEIGHTS_NAME, MoeLoraConfig, is_moelora_dir
from vlft.tuners.moelora.layer import MoeLoraLinear, RoutingContext
from vlft.tuners.moelora.io import (
    KEY_PREFIX,
    load_moelora,
    load_moelora_weights,
    moelora_state_dict,
    moelora_state_dict_refs,
    save_moelora,
)
from vlft.tuners.moelora.model import (
    aux_in_backward,
    apply_moelora,
    get_moelora_config,
    moelora_disabled,
    moelora_layers,
    routed_layers,
    routing_contexts,
    set_moelora_aux,
)
from vlft.tuners.moelora.stats import (
    count_trainable,
    expected_trainable_params,
    moelora_aux_loss,
    moelora_stats,
    moelora_summary,
    set_moelora_stats,
)
from vlft.tuners.moelora.targeting import find_target_modules
from vlft.errors import AdapterLoadError

__all__ = [
    "MoeLoraConfig", "MoeLoraLinear", "RoutingContext", "apply_moelora", "save_moelora", "load_moelora",
    "load_moelora_weights",
    "moelora_aux_loss", "moelora_stats", "count_trainable", "expected_trainable_params", "is_moelora_dir",
    "moelora_summary", "moelora_layers", "routed_layers", "find_target_modules", "set_moelora_stats",
    "moelora_disabled", "set_moelora_aux", "aux_in_backward", "routing_contexts",
    "moelora_state_dict", "get_moelora_config", "AdapterLoadError", "PEFT_TYPE", "MOELORA_VERSION",
    "CONFIG_NAME", "WEIGHTS_NAME", "KEY_PREFIX", "moelora_state_dict_refs",
]
