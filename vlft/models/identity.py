"""Which base model an adapter was made for: recorded when training saves, checked on every load.

PEFT checks tensor names and shapes only, so an adapter made for another family whose modules
happen to line up (a Qwen2.5-VL adapter on a Qwen3-VL of the same size) loads silently and the
model generates nonsense. The adapter folder therefore carries ``base_model.json``::

    {"model_type": "qwen3_vl", "architectures": [...], "dims": {"hidden_size": ..., ...},
     "base_path": "/abs/qwen3-vl-4b-instruct", "name_or_path": "..."}

On load, another ``model_type`` / architecture, or other key dimensions, is an error; another
path is fine (folders move); an adapter without the file (an older one) loads with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IDENTITY_FILE = "base_model.json"
# Dimensions that decide whether adapter weights mean anything on a model (text and vision side).
_TEXT_DIMS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "vocab_size")
_VISION_DIMS = ("hidden_size", "depth", "out_hidden_size")


class IdentityMismatch(ValueError):
    """The adapter was recorded for another base model (message says what differs)."""


def _config_of(model_or_config: Any) -> Any:
    return getattr(model_or_config, "config", model_or_config)


def model_identity(model_or_config: Any, base_path: str | Path | None = None) -> dict[str, Any]:
    """The identity of a loaded model (or its config): family, architecture, key dimensions, path."""
    cfg = _config_of(model_or_config)
    text = getattr(cfg, "text_config", None) or cfg
    vision = getattr(cfg, "vision_config", None)
    dims = {f"text.{k}": getattr(text, k) for k in _TEXT_DIMS if getattr(text, k, None) is not None}
    if vision is not None:
        dims.update({f"vision.{k}": getattr(vision, k) for k in _VISION_DIMS
                     if getattr(vision, k, None) is not None})
    return {"model_type": getattr(cfg, "model_type", None),
            "architectures": list(getattr(cfg, "architectures", None) or []),
            "dims": dims,
            "base_path": str(Path(base_path).resolve()) if base_path else None,
            "name_or_path": getattr(cfg, "_name_or_path", None) or None}


def record_identity(adapter_dir: str | Path, model_or_config: Any, base_path: str | Path | None = None) -> Path:
    """Write ``base_model.json`` into the adapter folder (atomically)."""
    from vlft.utils.io import write_json

    path = Path(adapter_dir) / IDENTITY_FILE
    write_json(path, model_identity(model_or_config, base_path))
    return path


def check_identity(adapter_dir: str | Path, model_or_config: Any) -> None:
    """Raise ``IdentityMismatch`` when the adapter was recorded for another model family or size.

    No record (an adapter saved before it existed): one warning, and the load goes on.
    """
    path = Path(adapter_dir) / IDENTITY_FILE
    if not path.is_file():
        log.warning("%s: no %s (adapter saved by an older version): its base model family is not checked",
                    adapter_dir, IDENTITY_FILE)
        return
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IdentityMismatch(f"{path}: unreadable ({e.__class__.__name__}: {e})") from None
    cur = model_identity(model_or_config)
    was = rec.get("name_or_path") or rec.get("base_path") or "?"
    if rec.get("model_type") != cur["model_type"]:
        raise IdentityMismatch(f"adapter was made for a {rec.get('model_type')} model ({was}), "
                               f"this model is {cur['model_type']}")
    if rec.get("architectures") and cur["architectures"] and rec["architectures"] != cur["architectures"]:
        raise IdentityMismatch(f"adapter was made for {', '.join(rec['architectures'])} ({was}), "
                               f"this model is {', '.join(cur['architectures'])}")
    diff = [f"{k} {v} != {cur['dims'][k]}" for k, v in (rec.get("dims") or {}).items()
            if k in cur["dims"] and cur["dims"][k] != v]
    if diff:
        raise IdentityMismatch(f"adapter was made for a {rec.get('model_type')} model of another size ({was}): "
                               + ", ".join(diff))
