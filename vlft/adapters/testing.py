"""Random adapters and a "peaked" tiny model, for tests and benchmarks of inference/export.

Training lives elsewhere; these make adapters with the real PEFT classes and non-trivial
weights (a freshly initialised LoRA is a no-op: B = 0), so "the adapter changes the output"
and "merged == unmerged" are meaningful checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

AdapterKind = Literal["lora", "dora", "ia3"]
# Text-tower projections (the vision tower names its layers qkv/linear_fc*, so these hit text only).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_peaked_model(src: str | Path, dst: str | Path, std: float = 0.1, seed: int = 0) -> Path:
    """Copy a tiny model folder with its text weights redrawn at ``std``.

    The tiny model's default init (std 0.02) gives near-uniform logits and greedy decoding emits
    the same token for any input; std 0.1 makes the output depend on the image and prompt.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    src, dst = Path(src), Path(dst)
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "visual" not in name:
                p.normal_(0.0, std, generator=gen)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name not in ("config.json",
                                                                                    "generation_config.json"):
            shutil.copyfile(f, dst / f.name)
    return dst


def peft_config(kind: AdapterKind, r: int = 8, targets=DEFAULT_TARGETS):
    from peft import IA3Config, LoraConfig

    if kind == "ia3":
        ff = [t for t in targets if t in ("gate_proj", "up_proj", "down_proj")]
        return IA3Config(target_modules=list(targets), feedforward_modules=ff or None)
    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(targets),
                      use_dora=(kind == "dora"))


def perturb_adapter(peft_model, scale: float = 0.5, seed: int = 0) -> None:
    """Give every adapter tensor random, non-initial values (as a few training steps would)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if any(t in name for t in ("lora_A", "lora_B", "ia3_l", "lora_magnitude_vector")):
                noise = torch.randn(p.shape, generator=gen).to(p.device, torch.float32) * scale
                if "ia3_l" in name or "magnitude" in name:
                    p.copy_((p.float() * (1 + noise)).to(p.dtype))  # multiplicative: keep sign/size
                else:
                    p.copy_(noise.to(p.dtype))


def make_random_adapter(model_or_dir, out_dir: str | Path, kind: AdapterKind = "lora", r: int = 8,
                        seed: int = 0, scale: float = 0.5, base_name: str | None = None) -> Path:
    """Save a PEFT adapter of ``kind`` with random weights for the given model (or model folder)."""
    import torch
    from peft import get_peft_model

    model = model_or_dir
    if isinstance(model_or_dir, (str, Path)):
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained(model_or_dir, dtype=torch.float32)
        base_name = base_name or str(model_or_dir)
    peft_model = get_peft_model(model, peft_config(kind, r))
    perturb_adapter(peft_model, scale, seed)
    if base_name:
        peft_model.peft_config["default"].base_model_name_or_path = base_name
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    return out


def rename_adapter_keys(src: str | Path, dst: str | Path, old: str = ".language_model.layers.",
                        new: str = ".layers.") -> Path:
    """Copy an adapter with its tensor names rewritten (simulates an older transformers' naming)."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    save_file({k.replace(old, new): v for k, v in tensors.items()}, str(dst / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    return dst


def cached_dir(root: str | Path, name: str, build) -> Path:
    """``root/name`` built once by ``build(path)`` and reused (test sessions share one tmp root)."""
    path = Path(root) / name
    if not (path / ".complete").is_file():
        if path.exists():
            shutil.rmtree(path)
        build(path)
        (path / ".complete").touch()
    return path
