"""MoE-LoRA inside PEFT, through LoraConfig's custom-module hook (peft >= 0.14, tested on 0.21).

    from vlft.tuners.moelora.peft_compat import moelora_from_pretrained, get_moelora_peft_model
    model = moelora_from_pretrained(base, "output/run")   # PeftModel.from_pretrained(..., config=...)
    model = get_moelora_peft_model(base, MoeLoraConfig(...))      # train with PEFT's machinery

Both formats are one format: the same adapter_config.json ("peft_type": "MOELORA") and the same
tensor names (base_model.model.<module>.lora_expert_A / lora_expert_B / lora_router.weight), so a
folder written by ``save_moelora`` loads here and a PeftModel.save_pretrained folder loads with
``load_moelora``. Plain ``PeftModel.from_pretrained(base, dir)`` without ``config=`` refuses the
folder (unknown peft_type) rather than silently loading it as plain LoRA.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from vlft.tuners.moelora.config import MOELORA_VERSION, PEFT_TYPE, WEIGHTS_NAME, MoeLoraConfig
from vlft.tuners.moelora.layer import MoeRouted, RoutingContext, init_moelora_weights


@dataclasses.dataclass
class MoeLoraPeftConfig(LoraConfig):
    """LoraConfig plus the MoE fields; registers PeftMoeLoraLinear for every nn.Linear it targets."""

    num_experts: int = dataclasses.field(default=4, metadata={"help": "LoRA experts per Linear"})
    top_k: int = dataclasses.field(default=2, metadata={"help": "experts mixed per token"})
    router_aux_loss_coef: float = dataclasses.field(default=0.01, metadata={"help": "load-balancing weight"})
    router_bias: bool = dataclasses.field(default=False, metadata={"help": "router with a bias"})
    router_init_scale: float = dataclasses.field(default=0.1, metadata={"help": "router init std * sqrt(in)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        # nn.Linear covers bitsandbytes Linear4bit/Linear8bitLt (subclasses); custom modules win dispatch.
        self._register_custom_module({nn.Linear: PeftMoeLoraLinear})

    def to_dict(self) -> dict[str, Any]:
        # Saved as MOELORA so plain PEFT never mistakes it for LoRA, and load_moelora reads it.
        d = super().to_dict()
        d.update(peft_type=PEFT_TYPE, moelora_version=MOELORA_VERSION)
        return d

    @classmethod
    def from_moelora(cls, config: MoeLoraConfig, target_modules: Any = None,
                     inference_mode: bool = False) -> "MoeLoraPeftConfig":
        targets = target_modules if target_modules is not None else config.target_modules
        return cls(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                   target_modules="all-linear" if targets == "all-linear" else targets,
                   exclude_modules=config.exclude_modules, modules_to_save=config.modules_to_save,
                   num_experts=config.num_experts, top_k=config.top_k,
                   router_aux_loss_coef=config.router_aux_loss_coef, router_bias=config.router_bias,
                   router_init_scale=config.router_init_scale, inference_mode=inference_mode,
                   base_model_name_or_path=config.base_model_name_or_path, task_type="CAUSAL_LM")


class PeftMoeLoraLinear(nn.Module, LoraLayer, MoeRouted):
    """PEFT-conventions MoE-LoRA layer: per-adapter ParameterDicts, same math as MoeLoraLinear."""

    adapter_layer_names = ("lora_expert_A", "lora_expert_B", "lora_router")
    other_param_names = ("r", "lora_alpha", "scaling", "lora_dropout")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: MoeLoraPeftConfig, r: int = 0,
                 lora_alpha: int = 1, **kwargs: Any) -> None:
        super().__init__()
        LoraLayer.__init__(self, base_layer, **kwargs)
        self.lora_expert_A = nn.ParameterDict({})
        self.lora_expert_B = nn.ParameterDict({})
        self.lora_router = nn.ModuleDict({})
        self.moe_shape: dict[str, tuple[int, int]] = {}   # adapter -> (num_experts, top_k)
        self.context = RoutingContext()                    # replaced by a shared one in attach_routing_mask
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config: MoeLoraPeftConfig,
                     **kwargs: Any) -> None:
        if r <= 0:
            raise ValueError(f"`r` should be a positive integer value but the value passed is {r}")
        E = getattr(config, "num_experts", None)
        if E is None:
            raise TypeError("PeftMoeLoraLinear needs a MoeLoraPeftConfig (num_experts, top_k)")
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = lora_alpha / r
        p = config.lora_dropout
        self.lora_dropout[adapter_name] = nn.Dropout(p) if p > 0 else nn.Identity()
        A = nn.Parameter(torch.empty(E * r, self.in_features))
        B = nn.Parameter(torch.empty(self.out_features, E * r))
        router = nn.Linear(self.in_features, E, bias=config.router_bias)
        init_moelora_weights(A, B, router, config.router_init_scale)
        self.lora_expert_A[adapter_name], self.lora_expert_B[adapter_name] = A, B
        self.lora_router[adapter_name] = router
        self.moe_shape[adapter_name] = (E, config.top_k)
        self.num_experts, self.top_k = E, config.top_k
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name not in self.lora_expert_A:
                continue
            E, k = self.moe_shape[name]
            self.num_experts, self.top_k = E, k
            result = self._moe_out(result, x, self.lora_expert_A[name], self.lora_expert_B[name],
                                   self.lora_router[name], self.lora_dropout[name], self.r[name],
                                   self.scaling[name])
        return result

    def merge(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("MoE-LoRA cannot be merged into the base weights: the expert mix "
                                  "depends on each token; run it as an adapter")

    def unmerge(self) -> None:
        return None

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        raise NotImplementedError("MoE-LoRA has no single delta weight (routing is per token)")

    def __repr__(self) -> str:
        return "moelora." + super().__repr__()


def attach_routing_mask(model: nn.Module) -> nn.Module:
    """Share one RoutingContext across the model's PEFT MoE-LoRA layers and feed it the attention mask,
    so padding is left out of the balancing loss (what apply_moelora does for its own layers)."""
    from vlft.tuners.moelora.model import _capture_mask, _mask_hook_target, routed_layers

    ctx = RoutingContext().attach(routed_layers(model).values())
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    _mask_hook_target(base).register_forward_pre_hook(_capture_mask(ctx), with_kwargs=True)
    return model


def moelora_peft_config(adapter_dir: str | Path, inference_mode: bool = True) -> MoeLoraPeftConfig:
    """PEFT config for a MoE-LoRA folder, targeting exactly the modules its weights name."""
    from safetensors import safe_open

    from vlft.tuners.moelora.io import KEY_PREFIX

    config = MoeLoraConfig.load(adapter_dir)
    with safe_open(str(Path(adapter_dir) / WEIGHTS_NAME), framework="pt") as f:
        names = sorted({k[len(KEY_PREFIX):].rsplit(".lora_expert_A", 1)[0]
                        for k in f.keys() if k.endswith(".lora_expert_A")})
    return MoeLoraPeftConfig.from_moelora(config, target_modules=names, inference_mode=inference_mode)


def moelora_from_pretrained(model: nn.Module, adapter_dir: str | Path, is_trainable: bool = False,
                            **kwargs: Any) -> PeftModel:
    """``PeftModel.from_pretrained`` for a MoE-LoRA folder (the config is passed, PEFT loads the weights)."""
    config = moelora_peft_config(adapter_dir, inference_mode=not is_trainable)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable, config=config,
                                           **kwargs)
    return attach_routing_mask(peft_model)


def get_moelora_peft_model(model: nn.Module, config: MoeLoraConfig | MoeLoraPeftConfig) -> PeftModel:
    """``get_peft_model`` with MoE-LoRA layers (HF Trainer then saves/resumes it like any PEFT adapter)."""
    if isinstance(config, MoeLoraConfig):
        config = MoeLoraPeftConfig.from_moelora(config)
    return attach_routing_mask(get_peft_model(model, config))
