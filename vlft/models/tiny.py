"""The embedded default model: a tiny random-weight Qwen-VL built offline.

It uses the real transformers classes and the real tokenizer, chat template and
processor configs (vendored for Qwen3-VL-4B-Instruct), with every width and depth
shrunk so a forward/backward pass takes milliseconds on a CPU. The vocabulary stays
full size because the real tokenizer must map into it.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from vlft.paths import QWEN3_VL_ASSETS, shared_assets_dir

# Files copied verbatim from the reference folder next to the tiny weights.
PROCESSOR_FILES = (
    "chat_template.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.json",
    "preprocessor_config.json", "video_preprocessor_config.json", "generation_config.json",
)

TINY_MARKER = "tiny_random"  # key written into config.json so loaders can say "this is the tiny model"


def _shrink_qwen3_vl(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    t = cfg["text_config"]
    # head_dim 16 -> rotary half-dim 8 = sum(mrope_section): the section split must add up.
    t.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
    t["rope_scaling"] = dict(t.get("rope_scaling") or {}, mrope_section=[4, 2, 2])
    v = cfg["vision_config"]
    # patch/merge/temporal sizes stay real so the processor's image-token counts are the real ones.
    v.update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
             deepstack_visual_indexes=[0, 1])
    return cfg


def _shrink_qwen2_5_vl(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    text_keys = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                     max_window_layers=2)
    cfg.update(text_keys)
    if "text_config" in cfg:
        cfg["text_config"].update(text_keys)
    for d in (cfg, cfg.get("text_config", {})):
        if d.get("rope_scaling"):
            d["rope_scaling"] = dict(d["rope_scaling"], mrope_section=[2, 3, 3])  # head_dim 16
    v = cfg["vision_config"]
    v.update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
             fullatt_block_indexes=[1])
    return cfg


FAMILIES = {
    "qwen3-vl": (_shrink_qwen3_vl, lambda: QWEN3_VL_ASSETS),
    "qwen2.5-vl": (_shrink_qwen2_5_vl, lambda: shared_assets_dir("qwen2.5-vl-3b-instruct")),
}


def build_tiny_model(target: str | Path, family: str = "qwen3-vl", seed: int = 0,
                     dtype: str = "bfloat16") -> Path:
    """Write a tiny random-weight model folder that ``AutoModelForImageTextToText`` loads.

    Returns the folder. Deterministic for a given ``seed``.
    """
    return build_random_model(target, family=family, seed=seed, dtype=dtype, tiny=True)


def build_random_model(target: str | Path, family: str = "qwen3-vl", seed: int = 0, dtype: str = "bfloat16",
                       tiny: bool = True, device: str = "cpu") -> Path:
    """Write a random-weight model folder with the family's real tokenizer/processor files.

    ``tiny=False`` keeps the real widths and depths (Qwen3-VL-4B: 8.9 GB in bf16): what the GPU
    benchmarks train through ``lora.py`` (speed and memory do not depend on weight values).
    ``device`` is where the weights are initialised (``cuda`` is much faster for the full size).
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    shrink, ref_dir = FAMILIES[family]
    ref = ref_dir()
    if ref is None or not (ref / "config.json").is_file():
        import os

        from vlft.paths import REPO_DIR
        name = "qwen2.5-vl-3b-instruct" if family == "qwen2.5-vl" else "qwen3-vl-4b-instruct"
        searched = [Path(r) / name for r in (os.environ.get("VLFT_SHARED_ASSETS"),
                                            REPO_DIR.parent / "shared" / "assets") if r]
        looked = ref if ref is not None else " and ".join(str(p) for p in searched)
        raise FileNotFoundError(
            f"{family}: reference configs (config.json) not found in {looked}; put the model's config, "
            "tokenizer and processor files there, or set VLFT_SHARED_ASSETS to the folder that holds "
            f"{name}/ (Qwen2.5-VL files are never shipped with the project)")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)

    cfg_dict = json.loads((ref / "config.json").read_text(encoding="utf-8"))
    if tiny:
        cfg_dict = shrink(cfg_dict)
        cfg_dict[TINY_MARKER] = True
    (target / "config.json").write_text(json.dumps(cfg_dict, indent=2), encoding="utf-8")
    config = AutoConfig.from_pretrained(target)

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(target, safe_serialization=True)
    del model
    for name in PROCESSOR_FILES:
        if (ref / name).is_file():
            shutil.copyfile(ref / name, target / name)
    if not (target / "tokenizer.json").is_file():
        # A tokenizer.json next to the weights makes later loads fast (no BPE conversion);
        # only that file is written so the vendored tokenizer_config/template stay byte-exact.
        from transformers import AutoTokenizer
        AutoTokenizer.from_pretrained(target).backend_tokenizer.save(str(target / "tokenizer.json"))
    return target


def is_tiny(model_dir: str | Path) -> bool:
    cfg = Path(model_dir) / "config.json"
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get(TINY_MARKER))
    except (OSError, ValueError):
        return False
