"""Mixture-of-Experts LoRA: E LoRA experts per Linear mixed by a token-level top-k router.

    from vlft.tuners.moelora import MoeLoraConfig, apply_moelora, moelora_aux_loss, save_moelora
    cfg = MoeLoraConfig(r=8, num_experts=4, top_k=2, target_modules=["q_proj", "v_proj"])
    model = apply_moelora(model, cfg)
    loss = out.loss          # the router aux-loss gradient (coef * aux) is applied inside each
                             # layer's backward; moelora_aux_loss(model) is its detached value, to log
                             # (recorded on statistics forwards: set_moelora_stats)
    save_moelora(model, "output/run"); load_moelora(fresh_model, "output/run")
"""

from vlft.tuners.moelora.config import MOELORA_VERSION, PEFT_TYPE, MoeLoraConfig, is_moelora_dir
from vlft.tuners.moelora.layer import MoeLoraLinear, RoutingContext
from vlft.tuners.moelora.model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterLoadError,
    aux_in_backward,
    apply_moelora,
    count_trainable,
    expected_trainable_params,
    find_target_modules,
    get_moelora_config,
    load_moelora,
    load_moelora_weights,
    moelora_aux_loss,
    moelora_disabled,
    moelora_layers,
    moelora_state_dict,
    moelora_stats,
    moelora_summary,
    routed_layers,
    routing_contexts,
    save_moelora,
    set_moelora_aux,
    set_moelora_stats,
)

__all__ = [
    "MoeLoraConfig", "MoeLoraLinear", "RoutingContext", "apply_moelora", "save_moelora", "load_moelora",
    "load_moelora_weights",
    "moelora_aux_loss", "moelora_stats", "count_trainable", "expected_trainable_params", "is_moelora_dir",
    "moelora_summary", "moelora_layers", "routed_layers", "find_target_modules", "set_moelora_stats",
    "moelora_disabled", "set_moelora_aux", "aux_in_backward", "routing_contexts",
    "moelora_state_dict", "get_moelora_config", "AdapterLoadError", "PEFT_TYPE", "MOELORA_VERSION",
    "CONFIG_NAME", "WEIGHTS_NAME",
]
