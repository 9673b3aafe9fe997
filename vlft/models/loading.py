"""Load a Qwen-VL model and processor the same way in training, evaluation and inference.

One policy for precision, quantization and image resolution, so a model trained at
``max_pixels=N`` is evaluated and served at ``N`` too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vlft.errors import UserError

log = logging.getLogger(__name__)

Quant = Literal["none", "4bit", "8bit"]

# 280x280-ish captioning images: Qwen3-VL resizes to multiples of 32 px (patch 16 x merge 2).
DEFAULT_MAX_PIXELS = 288 * 288
DEFAULT_MIN_PIXELS = 32 * 32


# Kept in 16-bit under 4-/8-bit loading. transformers 5.x matches a pattern from the start of the
# module name (or as a suffix), so the vision tower needs its full prefix: "visual" alone matched only
# the container and left every vision Linear quantized.
SKIP_QUANT_MODULES = ("model.visual", "lm_head")


class ModelLoadError(UserError, RuntimeError):
    """The model folder is missing, incomplete or not a Qwen-VL model."""


@dataclass(frozen=True)
class Precision:
    """Resolved numeric settings for one run."""
    device: str            # "cuda" or "cpu"
    dtype: Any             # torch dtype of the (non-quantized) weights and compute
    quant: Quant

    @property
    def bf16(self) -> bool:
        import torch
        return self.dtype is torch.bfloat16

    @property
    def fp16(self) -> bool:
        import torch
        return self.dtype is torch.float16


def resolve_precision(quant: Quant | None = None, bf16: bool | None = None, fp16: bool | None = None,
                      device: str | None = None) -> Precision:
    """Defaults: CUDA -> 4-bit NF4 + bf16 (fp16 where bf16 is unsupported); CPU -> fp32, unquantized.

    ``quant=None`` means "default for the device"; an explicit value always wins (4-bit works
    on the CPU through bitsandbytes' CPU backend).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if quant is None:
        quant = "4bit" if device == "cuda" else "none"
        if device == "cpu":
            log.warning("No CUDA device: running unquantized in float32 on the CPU "
                        "(pass --load_in_4bit to use bitsandbytes' CPU 4-bit backend).")
    if bf16 and fp16:
        raise ValueError("bf16/fp16: choose at most one")
    if bf16:
        dtype = torch.bfloat16
    elif fp16:
        dtype = torch.float16
    elif device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return Precision(device=device, dtype=dtype, quant=quant)


def quantization_config(precision: Precision):
    """bitsandbytes config for the chosen quantization, or None."""
    if precision.quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    if precision.quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = precision.dtype
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute,
                              # Vision tower stays in 16-bit: it is small and quantizing it hurts.
                              llm_int8_skip_modules=list(SKIP_QUANT_MODULES))


def check_model_dir(model_dir: str | Path) -> Path:
    """One clear error when the folder is not a loadable model."""
    p = Path(model_dir)
    if not p.is_dir():
        raise ModelLoadError(f"{p}: model folder not found (run download_model.py, or "
                             f"`python download_model.py --tiny --target {p}` for the offline tiny model)")
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"{p}: no config.json; not a model folder")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ModelLoadError(f"{p}: no weight files (*.safetensors); the download is incomplete")
    return p


def load_model(model_dir: str | Path, precision: Precision | None = None,
               attn_implementation: str | None = None, device_map: Any = "auto"):
    """``AutoModelForImageTextToText`` with the precision policy above."""
    import torch
    from transformers import AutoModelForImageTextToText

    path = check_model_dir(model_dir)
    precision = precision or resolve_precision()
    kwargs: dict[str, Any] = dict(dtype=precision.dtype)
    qcfg = quantization_config(precision)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if precision.device == "cuda":
        kwargs["device_map"] = device_map if device_map != "auto" else {"": torch.cuda.current_device()}
    elif qcfg is not None:
        kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    return model


def load_processor(model_dir: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   min_pixels: int | None = DEFAULT_MIN_PIXELS):
    """AutoProcessor with the image-resolution bounds applied (same in every stage)."""
    from transformers import AutoProcessor

    import warnings

    path = Path(model_dir)
    kwargs: dict[str, Any] = {}
    if max_pixels or min_pixels:
        size = {}
        if min_pixels:
            size["shortest_edge"] = kwargs["min_pixels"] = int(min_pixels)
        if max_pixels:
            size["longest_edge"] = kwargs["max_pixels"] = int(max_pixels)
        # Qwen2.5-VL's preprocessor_config.json has its own min_pixels/max_pixels keys, which win over
        # ``size`` alone (a 640x480 photo became 391 image tokens instead of 88): pass both spellings.
        kwargs["size"] = size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # min_pixels/max_pixels: deprecated spelling
        warnings.simplefilter("ignore", UserWarning)
        processor = AutoProcessor.from_pretrained(path, **kwargs)
    # Left padding for batched generation; the training collator pads on its own.
    processor.tokenizer.padding_side = "left"
    return processor


def free_memory() -> None:
    """After the last reference to a model is dropped: return its memory before the next load."""
    import gc

    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
