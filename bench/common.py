"""Shared benchmark helpers: the real Qwen3-VL-4B architecture with random weights, synthetic
COCO-like samples, 4-bit quantization in place, FLOP counting and CUDA-event timing.

Weights are random (no download): speed and memory depend on shapes, not values. The model is
built directly on the target device in 16-bit (building 4B parameters on the CPU and moving
them is slow), then its language-model Linears are replaced by bitsandbytes NF4 double-quant
Linear4bit layers one by one when 4-bit is asked for (same layout as
``from_pretrained(quantization_config=...)`` with ``llm_int8_skip_modules=["visual", "lm_head"]``).
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass

# Less fragmentation -> lower reserved memory; must be set before CUDA initialises.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402

from vlft.paths import QWEN3_VL_ASSETS  # noqa: E402

H100_BF16_DENSE_TFLOPS = 989.4  # H100 SXM dense bf16 peak; the MFU denominator

WORDS = ("a man woman child dog cat riding sitting standing next to on in the of with large small red blue "
         "green white black street table plate pizza bus train horse field beach kitchen room window "
         "holding playing looking near two three people group bowl food water park tree building").split()


def qwen3_vl_config(tiny: bool):
    from transformers import AutoConfig

    cfg = json.loads((QWEN3_VL_ASSETS / "config.json").read_text(encoding="utf-8"))
    if tiny:
        from vlft.models.tiny import _shrink_qwen3_vl
        cfg = _shrink_qwen3_vl(cfg)
    cfg.pop("transformers_version", None)
    config = AutoConfig.for_model(**cfg)
    config.text_config.use_cache = False
    return config


def build_model(tiny: bool = False, device: str = "cuda", dtype: torch.dtype = torch.bfloat16,
                attn: str = "sdpa", seed: int = 0):
    """Random-weight Qwen3VLForConditionalGeneration built in place on ``device``."""
    from transformers import Qwen3VLForConditionalGeneration

    config = qwen3_vl_config(tiny)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.config.use_cache = False
    return model


def quantize_4bit_(model, compute_dtype: torch.dtype, skip: tuple[str, ...] = ("visual", "lm_head")) -> int:
    """Replace the language model's nn.Linear layers by bnb NF4 double-quant Linear4bit, in place.

    Quantizes on the weight's current device, layer by layer (peak = model + one layer).
    Returns the number of replaced layers.
    """
    import bitsandbytes as bnb

    targets = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, torch.nn.Linear) and not any(s in name.split(".") for s in skip)]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        dev = lin.weight.device
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                              device="meta")
        w = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=True,
                              quant_type="nf4", module=q)
        q.weight = w._quantize(dev)
        if lin.bias is not None:
            q.bias = torch.nn.Parameter(lin.bias.data, requires_grad=False)
        setattr(parent, child, q)
        del lin
    model.is_loaded_in_4bit = True  # what PEFT / Trainer look at for a k-bit model
    _attach_hf_quantizer(model, compute_dtype, skip)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return len(targets)


def _attach_hf_quantizer(model, compute_dtype, skip) -> None:
    """Record the quantization like ``from_pretrained`` does, so Trainer's checks see a bnb model."""
    from transformers import BitsAndBytesConfig

    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(skip))
    model.config.quantization_config = qc
    try:
        from transformers.quantizers import AutoHfQuantizer
        model.hf_quantizer = AutoHfQuantizer.from_config(qc, pre_quantized=False)
        model.is_quantized = True
    except Exception as e:  # noqa: BLE001 - Trainer then treats it as an unquantized model with adapters
        print(f"note: no hf_quantizer attached ({type(e).__name__}: {e})")


def load_bench_processor():
    """The real Qwen3-VL processor (vendored files) with the project's resolution policy."""
    from vlft.models.loading import load_processor

    return load_processor(QWEN3_VL_ASSETS)


def _caption(rng: random.Random, tokenizer, n_tokens: int) -> str:
    words: list[str] = []
    while len(tokenizer(" ".join(words + ["x"]))["input_ids"]) <= n_tokens:
        words.append(rng.choice(WORDS))
    return (" ".join(words).capitalize() + ".") if words else "A photo."


def make_samples(processor, n: int, seed: int = 0, image_size: int = 280, caption_tokens: int = 20,
                 prompt: str | None = None) -> list[dict]:
    """``n`` preprocessed caption samples: random ``image_size`` RGB image, ~``caption_tokens`` caption.

    Each: input_ids [L], labels [L] (assistant caption + <|im_end|> only), pixel_values [P, C],
    image_grid_thw [1, 3]. A 280x280 image becomes 288x288 -> 18x18 patches -> 81 image tokens.
    """
    import numpy as np
    from PIL import Image

    from vlft.paths import DEFAULT_CAPTION_PROMPT

    prompt = prompt or DEFAULT_CAPTION_PROMPT
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = Image.fromarray(nprng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8))
        cap = _caption(rng, tok, caption_tokens + rng.randint(-3, 3))
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        full_msgs = [user, {"role": "assistant", "content": [{"type": "text", "text": cap}]}]
        prompt_text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
        full_text = processor.apply_chat_template(full_msgs, tokenize=False)
        enc = processor(text=[full_text], images=[img], return_tensors="pt")
        n_prompt = processor(text=[prompt_text], images=[img], return_tensors="pt")["input_ids"].shape[1]
        ids = enc["input_ids"][0]
        labels = torch.full_like(ids, -100)
        end = (ids[n_prompt:] == im_end).nonzero()[0].item() + n_prompt + 1  # through <|im_end|>
        labels[n_prompt:end] = ids[n_prompt:end]
        out.append({"id": f"synthetic-{i}", "input_ids": ids, "labels": labels,
                    "pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]})
    return out


@dataclass
class FlopCount:
    """Model FLOPs of one sample for one training step (MFU numerator, PaLM-style 6N convention).

    Text: 6 x (non-embedding params) x tokens + causal attention 6 x 2 x layers x L^2/2 x d_attn.
    LM head: 6 x d x V x labelled tokens (the fast path projects only those; the plain path
    does more work than this counts). Vision (frozen, forward only): 2 x params x patches.
    """
    text: float
    lm_head: float
    vision: float

    @property
    def total(self) -> float:
        return self.text + self.lm_head + self.vision


def count_flops(model, sample: dict) -> FlopCount:
    from vlft.train.fast import unwrap_causal_lm

    lm = unwrap_causal_lm(model)
    tc = lm.config.text_config
    layers = lm.model.language_model.layers
    n_text = sum(_dense_numel(m) for m in layers.modules() if _is_linear(m))
    T = sample["input_ids"].numel()
    n_lab = int((sample["labels"][1:] != -100).sum())
    d_attn = tc.num_attention_heads * tc.head_dim
    attn = 6 * 2 * len(layers) * (T * T / 2) * d_attn
    n_vis = sum(p.numel() for p in lm.model.visual.parameters())
    patches = int(sample["image_grid_thw"].prod(-1).sum())
    return FlopCount(text=6 * n_text * T + attn, lm_head=6 * tc.hidden_size * tc.vocab_size * n_lab,
                     vision=2 * n_vis * patches)


def _is_linear(m) -> bool:
    return isinstance(m, torch.nn.Linear) or type(m).__name__ == "Linear4bit"


def _dense_numel(m) -> int:
    return m.in_features * m.out_features


class CudaTimer:
    """Wall time of a region measured with CUDA events (falls back to perf_counter on CPU)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()

    @contextmanager
    def region(self):
        res = {}
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            yield res
            b.record()
            b.synchronize()
            res["s"] = a.elapsed_time(b) / 1e3
        else:
            t0 = time.perf_counter()
            yield res
            res["s"] = time.perf_counter() - t0


def reset_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(device: str) -> tuple[float, float]:
    """(peak allocated, peak reserved) in GiB since the last reset_memory."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
    return float("nan"), float("nan")


def versions() -> dict:
    import importlib

    out = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "peft", "bitsandbytes"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as e:  # noqa: BLE001 - report what is missing, keep going
            out[name] = f"missing ({type(e).__name__})"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def is_range_mirror(event, phase_prefix: str = "step/") -> bool:
    """Whether a profiler event with device time is the GPU-side mirror of a ``record_function``
    range (ours, or compiled graphs' "## Call CompiledFxGraph ..."), not a kernel, copy or set:
    counting those as device work double-counts the kernels inside them."""
    return bool(getattr(event, "is_user_annotation", False)) or event.key.startswith((phase_prefix, "## "))


def gpu_idle_by_phase(events, phase_prefix: str = "step/", top: int = 8) -> str:
    """Where the GPU waits in a profiled step: its idle gaps, attributed to the host phase (a
    ``record_function`` named ``phase_prefix...``) and the top-level host op running during each.

    ``events``: ``prof.events()`` of a torch.profiler run with CPU and CUDA activities. Times in ms.
    A gap while the host is inside phase X means X's host work (or a sync in it) is exposed.
    """
    from torch.autograd import DeviceType

    dev = sorted((e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA
                 and not is_range_mirror(e, phase_prefix))
    cpu = [e for e in events if e.device_type == DeviceType.CPU]
    phases = [e for e in cpu if e.name.startswith(phase_prefix)]
    if not dev or not phases:
        return "no device events or no phases recorded"
    t0 = min(p.time_range.start for p in phases)
    t1 = max(max(p.time_range.end for p in phases), dev[-1][1])
    gaps, cur_s, cur_e = [], t0, t0
    for s, e in dev:  # merge device intervals; gaps between them are idle time
        if s > cur_e:
            gaps.append((cur_e, s))
            cur_s = s
        cur_e = max(cur_e, e)
    if t1 > cur_e:
        gaps.append((cur_e, t1))
    busy = (t1 - t0) - sum(e - s for s, e in gaps)

    def phase_at(t):
        for p in phases:
            if p.time_range.start <= t <= p.time_range.end:
                return p.name
        return "(between phases)"

    # top-level host ops: those whose parent is a phase marker
    tops = [e for e in cpu if e.cpu_parent is not None and e.cpu_parent.name.startswith(phase_prefix)]

    def op_during(s, e):
        best, over = "?", 0.0
        for o in tops:
            ov = min(e, o.time_range.end) - max(s, o.time_range.start)
            if ov > over:
                best, over = o.name, ov
        return best

    by_phase: dict[str, list[float]] = {}
    for s, e in gaps:
        by_phase.setdefault(phase_at((s + e) / 2), []).append(e - s)
    lines = [f"window {(t1 - t0) / 1e3:.1f} ms, GPU busy {busy / 1e3:.1f} ms, idle {(t1 - t0 - busy) / 1e3:.1f} ms"]
    for p in phases:
        lines.append(f"  host {p.name}: {(p.time_range.end - p.time_range.start) / 1e3:.1f} ms")
    for name, g in sorted(by_phase.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"  GPU idle during {name}: {sum(g) / 1e3:.1f} ms in {len(g)} gaps")
    for s, e in sorted(gaps, key=lambda g: g[0] - g[1])[:top]:
        lines.append(f"    gap {(e - s) / 1e3:.2f} ms at +{(s - t0) / 1e3:.1f} ms in {phase_at((s + e) / 2)}, "
                     f"host in {op_during(s, e)}")
    return "\n".join(lines)
