"""Load a trained adapter onto a base model, and prove it applied.

PEFT loads an adapter whose tensor names match nothing with only a warning (or in silence),
after which the model generates base-model text. That happens after a transformers upgrade
renames modules (``model.layers.*`` became ``model.language_model.layers.*``). So every load is
followed by a check that each tensor in ``adapter_model.safetensors`` landed in the model,
value for value; anything else is one ``AdapterLoadError`` line.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


from vlft.errors import AdapterLoadError  # noqa: E402  (one class for every adapter kind)


@dataclass
class AdapterInfo:
    """What an adapter folder holds (read from its config; nothing is loaded)."""
    path: Path
    type: str                    # "lora" | "dora" | "ia3" | "moelora" | other PEFT type, lower-case
    base_model: str | None
    r: int | None
    targets: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. num_experts for MoE-LoRA

    @property
    def mergeable(self) -> bool:
        from vlft.adapters.methods import METHODS, get_method
        return self.type in METHODS and get_method(self.type).mergeable

    def summary(self) -> str:
        parts = [self.type]
        if self.r is not None:
            parts.append(f"r={self.r}")
        parts += [f"{k}={v}" for k, v in self.extra.items()]
        if self.targets:
            parts.append("targets=" + ",".join(self.targets))
        if self.base_model:
            parts.append(f"base={self.base_model}")
        return " ".join(parts)


# -- inspection -------------------------------------------------------------------------------
def check_adapter_dir(adapter_dir: str | Path) -> Path:
    p = Path(adapter_dir)
    if not p.is_dir():
        raise AdapterLoadError(f"{p}: adapter folder not found")
    if not (p / ADAPTER_CONFIG).is_file():
        raise AdapterLoadError(f"{p}: no {ADAPTER_CONFIG}; not an adapter folder "
                               "(a merged model goes to --model, not --adapter)")
    if not any((p / w).is_file() for w in ADAPTER_WEIGHTS):
        raise AdapterLoadError(f"{p}: no adapter_model.safetensors; the adapter was not saved completely")
    return p


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    p = check_adapter_dir(adapter_dir)
    try:
        cfg = json.loads((p / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AdapterLoadError(f"{p / ADAPTER_CONFIG}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise AdapterLoadError(f"{p / ADAPTER_CONFIG}: top level must be an object")
    return cfg


def is_moelora(adapter_dir: str | Path) -> bool:
    try:
        from vlft.tuners.moelora import is_moelora_dir
    except ImportError:
        is_moelora_dir = None
    if is_moelora_dir is not None:
        return bool(is_moelora_dir(adapter_dir))
    # Fallback while the tuner is absent: its config names the method somewhere.
    cfg_path = Path(adapter_dir) / ADAPTER_CONFIG
    try:
        return "moelora" in cfg_path.read_text(encoding="utf-8").lower().replace("_", "").replace("-", "")
    except OSError:
        return False


def describe_adapter(adapter_dir: str | Path) -> AdapterInfo:
    """Type, base model, rank and target modules of an adapter folder."""
    p = check_adapter_dir(adapter_dir)
    cfg = read_adapter_config(p)
    peft_type = str(cfg.get("peft_type", "")).lower()
    extra: dict[str, Any] = {}
    if is_moelora(p):
        kind = "moelora"
        for k in ("num_experts", "expert_num", "top_k", "moe_top_k"):
            if k in cfg:
                extra[k] = cfg[k]
    elif peft_type == "lora":
        kind = "dora" if cfg.get("use_dora") else "lora"
    elif peft_type:
        kind = peft_type
    else:
        raise AdapterLoadError(f"{p / ADAPTER_CONFIG}: no peft_type; not a PEFT adapter config")
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return AdapterInfo(path=p, type=kind, base_model=cfg.get("base_model_name_or_path"),
                       r=cfg.get("r"), targets=sorted(targets), extra=extra)


# -- loading ----------------------------------------------------------------------------------
def load_adapter(model, adapter_dir: str | Path, is_trainable: bool = False):
    """Wrap ``model`` with the adapter in ``adapter_dir`` (LoRA, DoRA, IA3 or MoE-LoRA).

    Raises ``AdapterLoadError`` (one line) when the folder is missing, the adapter was made for
    another base (shape mismatch), or its tensors do not map onto this model's modules.
    """
    info = describe_adapter(adapter_dir)
    from vlft.models.identity import IdentityMismatch, check_identity
    try:
        check_identity(info.path, model)   # another family whose shapes happen to match: PEFT would load it
    except IdentityMismatch as e:
        raise AdapterLoadError(f"{info.path}: {e}") from None
    if info.type == "moelora":
        model = _load_moelora(model, info.path)
    else:
        model = _load_peft(model, info.path, is_trainable)
    verify_adapter_applied(model, info.path)
    log.info("adapter %s: %s", info.path, info.summary())
    return model


def _load_peft(model, path: Path, is_trainable: bool):
    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            # Missing/unexpected-key warnings are turned into a hard error by the check below.
            warnings.simplefilter("ignore")
            return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise AdapterLoadError(_explain_peft_error(path, e)) from None


def _load_moelora(model, path: Path):
    try:
        from vlft.tuners.moelora import load_moelora
    except ImportError as e:
        raise AdapterLoadError(f"{path}: MoE-LoRA adapter, but vlft.tuners.moelora is unavailable ({e})") from None
    try:
        return load_moelora(model, path)
    except (RuntimeError, ValueError, KeyError) as e:
        # The tuner's own errors are already one line naming the folder.
        msg = str(e).strip()
        raise AdapterLoadError(msg if msg.startswith(str(path)) else _explain_peft_error(path, e)) from None


_SIZE_RE = re.compile(r"size mismatch for ([^:]+): copying a param with shape (torch\.Size\(\[[^\]]*\]\)) "
                      r"from checkpoint, the shape in current model is (torch\.Size\(\[[^\]]*\]\))")


def _explain_peft_error(path: Path, e: Exception) -> str:
    msg = str(e)
    m = _SIZE_RE.search(msg)
    base = _base_name(path)
    if m:
        n = len(_SIZE_RE.findall(msg))
        return (f"{path}: adapter was made for another base model{base}: {m.group(1)} has shape "
                f"{_shape(m.group(2))} in the adapter but {_shape(m.group(3))} in this model "
                f"({n} tensor(s) differ)")
    if "not found in the base model" in msg or "Target module" in msg:
        hint = (" - it names 'model.layers.*' but this transformers calls them 'model.language_model.layers.*'"
                if "model.layers" in msg.replace("\\", "") and "language_model" not in msg else "")
        return (f"{path}: adapter targets modules this model does not have{base} "
                f"({msg.splitlines()[0][:200]}){hint}")
    first = msg.strip().splitlines()[0] if msg.strip() else e.__class__.__name__
    return f"{path}: cannot load adapter{base}: {first[:300]}"


def _shape(s: str) -> str:
    return "[" + s[len("torch.Size(["):-2] + "]"


def _base_name(path: Path) -> str:
    try:
        b = read_adapter_config(path).get("base_model_name_or_path")
    except AdapterLoadError:
        return ""
    return f" (trained on {b})" if b else ""


# -- verification -----------------------------------------------------------------------------
def _adapter_file_tensors(path: Path) -> dict[str, Any]:
    st = path / "adapter_model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file
        return load_file(str(st))
    import torch
    return torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)


def _model_adapter_tensors(model) -> dict[str, Any]:
    """The model's adapter tensors under the names PEFT saves them with."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    if isinstance(model, PeftModel):
        out: dict[str, Any] = {}
        for name in model.peft_config:
            out.update(get_peft_model_state_dict(model, adapter_name=name))
        return out
    try:
        from vlft.tuners.moelora import moelora_layers, moelora_state_dict_refs
        if moelora_layers(model):
            return moelora_state_dict_refs(model)
    except ImportError:
        pass
    return dict(model.state_dict())


def verify_adapter_applied(model, adapter_dir: str | Path) -> None:
    """Every tensor in the adapter file must sit, with the same value, in the loaded model."""
    import torch

    path = Path(adapter_dir)
    saved = _adapter_file_tensors(path)
    if not saved:
        raise AdapterLoadError(f"{path}: adapter_model.safetensors holds no tensors")
    # Same names on both sides: PEFT registers no key conversion for Qwen2-VL/2.5-VL/3-VL in
    # transformers 5 (transformers.conversion_mapping), so a renamed module is simply absent.
    loaded = _model_adapter_tensors(model)
    missing, differ = [], []
    for key, value in saved.items():
        if key not in loaded:
            missing.append(key)
            continue
        have = loaded[key]
        if tuple(have.shape) != tuple(value.shape):
            differ.append(f"{key} shape {list(value.shape)} vs {list(have.shape)}")
        # Compare in the model's dtype: a bf16 adapter copy of an fp32 file is still "applied".
        elif not torch.allclose(have.detach().cpu().float(), value.to(have.dtype).float(), atol=1e-6, rtol=1e-5):
            differ.append(f"{key} values")
    if missing:
        hint = ""
        if any(".model.layers." in k for k in missing) and any(".language_model.layers." in k for k in loaded):
            hint = (" - it names modules 'model.layers.*' but this transformers calls them "
                    "'model.language_model.layers.*' (saved with an older transformers; rename the keys "
                    "in adapter_model.safetensors or retrain)")
        raise AdapterLoadError(
            f"{path}: adapter did not apply: {len(missing)} of {len(saved)} tensors match no module of "
            f"this model, e.g. {missing[0]}{hint}")
    if differ:
        raise AdapterLoadError(f"{path}: adapter was made for another base model{_base_name(path)}: "
                               f"{len(differ)} tensor(s) do not fit, e.g. {differ[0]}")
