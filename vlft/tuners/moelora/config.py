"""MoE-LoRA configuration and its adapter_config.json form (PEFT's layout plus a type marker)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vlft.config import BaseConfig, ConfigError, field, require
from vlft.utils.io import write_json

PEFT_TYPE = "MOELORA"          # never a PEFT type name: loaders tell the formats apart by it
MOELORA_VERSION = 1            # bump when the weight layout or the forward changes meaning
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
ALL_LINEAR = ("all", "all-linear", "all_linear")


@dataclass
class MoeLoraConfig(BaseConfig):
    """Mixture-of-Experts LoRA: E LoRA experts per targeted Linear, mixed by a token-level top-k router."""

    r: int = field(8, "rank of each expert", aliases=("lora_r",))
    lora_alpha: float = field(16.0, "scaling numerator: each expert's update is (alpha / r) * B_e A_e x")
    lora_dropout: float = field(0.0, "dropout on the adapter input (the router sees the clean input)")
    num_experts: int = field(4, "E: LoRA experts per targeted Linear")
    top_k: int = field(2, "experts mixed per token (1 <= top_k <= num_experts)")
    router_aux_loss_coef: float = field(
        0.01, "weight of the Switch load-balancing loss; its gradient is applied inside each layer's "
              "backward (0 = off: add coef * moelora_aux_loss(model) to the loss yourself)")
    target_modules: Any = field(
        None, "module names to wrap: a list of names/suffixes (e.g. q_proj, attn.qkv), a regex "
              "string (full match on the dotted name, like PEFT), or 'all-linear'")
    exclude_modules: Any = field(
        None, "modules never wrapped, same forms as target_modules (lm_head is always excluded)")
    modules_to_save: list[str] | None = field(
        None, "extra modules (name suffixes) trained in full and saved with the adapter")
    router_bias: bool = field(
        False, "give the router a bias (off: a token-independent preference is what the "
               "load-balancing loss fights, and the formula stays E*in per layer)")
    router_init_scale: float = field(
        0.1, "router weights ~ N(0, (scale/sqrt(in))^2): logits start small, so gates are near "
             "uniform while the top-k choice still differs token by token")
    init_seed: int | None = field(
        None, "seed for the adapter's initial weights; None uses torch's global RNG (set_seed)")
    adapter_dtype: Literal["float32", "bfloat16", "float16", "base"] = field(
        "float32", "dtype of adapter weights; 'base' = the base layer's compute dtype. float32 "
                   "like PEFT's autocast_adapter_dtype: stable updates under a bf16/4-bit base")
    base_model_name_or_path: str | None = field(None, "base model the adapter was trained on")

    def validate(self) -> None:
        super().validate()
        require(self.r > 0, "r", f"must be a positive integer, got {self.r}")
        require(self.num_experts > 0, "num_experts", f"must be >= 1, got {self.num_experts}")
        require(1 <= self.top_k <= self.num_experts, "top_k",
                f"must be between 1 and num_experts={self.num_experts}, got {self.top_k}")
        require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        require(self.router_aux_loss_coef >= 0, "router_aux_loss_coef", "must be >= 0")
        require(self.router_init_scale >= 0, "router_init_scale", "must be >= 0")
        self.target_modules = _norm_targets(self.target_modules, "target_modules")
        self.exclude_modules = _norm_targets(self.exclude_modules, "exclude_modules")
        require(self.target_modules is not None, "target_modules",
                "required: a list of module names, a regex, or 'all-linear'")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    # -- adapter_config.json -----------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        # PEFT's key names where they exist, so tools that read adapter_config.json see familiar fields.
        d.update(peft_type=PEFT_TYPE, moelora_version=MOELORA_VERSION, task_type="CAUSAL_LM",
                 inference_mode=True, bias="none",
                 target_modules=sorted(d["target_modules"]) if isinstance(d["target_modules"], list)
                 else d["target_modules"])
        return dict(sorted(d.items()))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        write_json(path, self.to_json_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "MoeLoraConfig":
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{directory}: no {CONFIG_NAME}; not an adapter folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if data.get("peft_type") != PEFT_TYPE:
            raise ConfigError(f"{path}: peft_type is {data.get('peft_type')!r}, not {PEFT_TYPE!r}; "
                              "load it with PEFT (PeftModel.from_pretrained) instead")
        version = data.get("moelora_version", 0)
        if version > MOELORA_VERSION:
            raise ConfigError(f"{path}: moelora_version {version} is newer than this code "
                              f"understands ({MOELORA_VERSION}); update vlft")
        names = {f for f in cls.__dataclass_fields__}
        return cls.from_dict({k: v for k, v in data.items() if k in names}, source=str(path))


def is_moelora_dir(path: str | Path) -> bool:
    """True when ``path`` holds a MoE-LoRA adapter (adapter_config.json with peft_type MOELORA)."""
    try:
        data = json.loads((Path(path) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("peft_type") == PEFT_TYPE


def _norm_targets(value: Any, name: str) -> list[str] | str | None:
    """None | 'all-linear' | regex string | list of names. A comma-separated string is a list."""
    if value is None:
        return None
    if isinstance(value, str):
        v = value.strip()
        if not v:
            return None
        if v.lower() in ALL_LINEAR:
            return "all-linear"
        if "," in v:
            return [p.strip() for p in v.split(",") if p.strip()]
        return v
    if isinstance(value, (list, tuple, set)):
        if not all(isinstance(p, str) for p in value):
            raise ConfigError(f"{name}: every entry must be a string, got {value!r}")
        return [p.strip() for p in value if p.strip()] or None
    raise ConfigError(f"{name}: expected a list of names, a regex string or 'all-linear', got {value!r}")
