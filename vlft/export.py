"""Merge a LoRA / DoRA / IA3 adapter into 16-bit base weights and save a standalone model folder.

The folder is what plain ``transformers`` and vLLM load: ``config.json`` + ``*.safetensors`` +
the base's tokenizer / processor / chat-template files, copied byte for byte.

An adapter trained on a 4-bit (QLoRA) base is merged into the base loaded in 16-bit: merging
into NF4 weights would round the update away and write a quantized checkpoint vLLM cannot use.
MoE-LoRA is refused: its router mixes experts per token, so no single weight delta exists.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlft.config import BaseConfig, field, require
from vlft.errors import UserError

log = logging.getLogger(__name__)

# Copied verbatim from the base folder so the tokenizer and template stay byte-exact.
PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "chat_template.json", "chat_template.jinja", "preprocessor_config.json",
    "video_preprocessor_config.json", "processor_config.json", "generation_config.json",
)


class ExportError(UserError, RuntimeError):
    """The adapter cannot be exported (one line saying why)."""


@dataclass
class ExportConfig(BaseConfig):
    """Merge an adapter into its base model and save a folder transformers / vLLM load."""

    model: str = field("./qwen3-vl-4b-instruct", "base model folder the adapter was trained on "
                       "(loaded in 16-bit even if training used 4-bit)", aliases=("model_name_or_path",))
    adapter: str = field("", "LoRA / DoRA / IA3 adapter folder to merge")
    output: str = field("", "folder to write the merged model to", aliases=("output_dir",))
    dtype: Literal["bfloat16", "float16", "float32"] = field("bfloat16", "dtype of the merged weights")
    device: Literal["cpu", "cuda"] = field("cpu", "where to merge (cpu needs ~2x the 16-bit model in RAM)")
    max_shard_size: str = field("4GB", "largest safetensors shard")
    overwrite: bool = field(False, "replace an existing output folder")
    verbose: bool = field(False, "debug logging")

    def validate(self) -> None:
        super().validate()
        require(bool(self.adapter), "adapter", "give the adapter folder to merge (--adapter)")
        require(bool(self.output), "output", "give the folder to write (--output)")
        out = Path(self.output).resolve()
        for name in ("model", "adapter"):
            src = Path(getattr(self, name)).resolve()
            # --overwrite replaces the whole output folder: it must not hold (or be inside) an input
            require(out != src and out not in src.parents and src not in out.parents, "output",
                    f"{self.output} overlaps --{name} {getattr(self, name)}; write the merged model elsewhere "
                    "(the inputs are never overwritten)")


def check_mergeable(adapter_dir: str | Path):
    """AdapterInfo for a mergeable adapter; ExportError for MoE-LoRA and unknown types."""
    from vlft.adapters.loading import describe_adapter

    info = describe_adapter(adapter_dir)
    if info.type == "moelora":
        raise ExportError(f"{info.path}: MoE-LoRA adapter cannot be merged: routing depends on each token; "
                          f"keep using the adapter (test.py --adapter {info.path})")
    if not info.mergeable:
        raise ExportError(f"{info.path}: {info.type} adapters cannot be merged here (LoRA, DoRA and IA3 can); "
                          "keep using the adapter")
    return info


def merge_adapter(model_dir: str | Path, adapter_dir: str | Path, dtype: str = "bfloat16",
                  device: str = "cpu"):
    """The base loaded unquantized in ``dtype`` with the adapter merged into its weights."""
    import torch

    from vlft.adapters.loading import load_adapter
    from vlft.models.loading import Precision, load_model

    check_mergeable(adapter_dir)
    precision = Precision(device=device, dtype=getattr(torch, dtype), quant="none")
    model = load_model(model_dir, precision)
    model = load_adapter(model, adapter_dir)          # verified: every adapter tensor applied
    merged = model.merge_and_unload(safe_merge=True)  # safe_merge: NaN check before writing
    leftovers = [n for n, _ in merged.named_modules() if n.endswith(("lora_A", "ia3_l", "lora_B"))]
    if leftovers:
        raise ExportError(f"{adapter_dir}: merge left adapter modules behind, e.g. {leftovers[0]}")
    return merged


def export_merged(cfg: ExportConfig) -> Path:
    """Merge and write ``cfg.output`` atomically (temp folder, then rename). Returns the folder."""
    out = Path(cfg.output)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise ExportError(f"{out}: output folder exists and is not empty (pass --overwrite to replace it)")
    info = check_mergeable(cfg.adapter)
    merged = merge_adapter(cfg.model, cfg.adapter, cfg.dtype, cfg.device)

    out.parent.mkdir(parents=True, exist_ok=True)
    from vlft.utils.io import apply_umask, make_temp_dir
    tmp = make_temp_dir(out.parent, prefix=f".{out.name}.")   # another user's server must read it
    try:
        merged.config.use_cache = True
        merged.save_pretrained(tmp, safe_serialization=True, max_shard_size=cfg.max_shard_size)
        copy_processor_files(cfg.model, tmp)
        (tmp / "export_info.json").write_text(json.dumps({
            "base_model": str(cfg.model), "adapter": str(cfg.adapter), "adapter_type": info.type,
            "r": info.r, "targets": info.targets, "dtype": cfg.dtype}, indent=2) + "\n", encoding="utf-8")
        apply_umask(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("merged %s adapter %s into %s -> %s", info.type, cfg.adapter, cfg.model, out)
    return out


def copy_processor_files(src: str | Path, dst: str | Path) -> list[str]:
    """Tokenizer / processor / template files of the base, verbatim (saved fresh if none exist)."""
    src, dst = Path(src), Path(dst)
    copied = []
    for name in PROCESSOR_FILES:
        if name == "generation_config.json" and (dst / name).is_file():
            continue  # save_pretrained already wrote the model's own
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    if "tokenizer_config.json" not in copied:
        from transformers import AutoProcessor
        AutoProcessor.from_pretrained(src).save_pretrained(dst)
    return copied
