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


# -- language prior ---------------------------------------------------------------------------------
PRIOR_KEY = "tiny_language_prior"  # config.json entry describing the prior (absent: random weights)
PRIOR_STEPS = 200
PRIOR_VERSION = 1  # part of the cache key: bump when the pre-training recipe changes


def prior_texts(data_path: str | Path) -> list[str]:
    """The assistant answers (captions) of a training split, in file order, blanks dropped."""
    from vlft.data.dataset import load_samples

    texts = []
    for sample in load_samples(data_path).samples:
        for m in sample["messages"]:
            if m["role"] == "assistant":
                c = m["content"]
                t = c if isinstance(c, str) else "".join(p.get("text", "") for p in c if isinstance(p, dict))
                if t.strip():
                    texts.append(t.strip())
    return texts


def pretrain_language_prior(model, tokenizer, texts: list[str], steps: int = PRIOR_STEPS, lr: float = 3e-3,
                            batch_size: int = 16, seed: int = 0, n_negatives: int = 1024) -> list[float]:
    """Train the language model's weights (embeddings, layers, final norm; the vision tower stays random)
    as a plain next-token model on ``texts``; returns the loss per step.

    Only the embedding rows of tokens in ``texts`` are trained, and the softmax runs over those tokens
    and ``n_negatives`` rows drawn from the rest of the vocabulary at each step (kept fixed): the full
    151k-row softmax (and its optimizer update) would make each step many times slower. The texts are
    never seen in the chat template (only followed by the end-of-turn token): the prior knows the words, not the task
    (the adapters learn to caption)."""
    import random

    import torch

    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")  # how an answer ends in the chat template
    seqs = [[eot] + tokenizer(t)["input_ids"] + [end] for t in texts]
    vocab = sorted({i for s in seqs for i in s})
    index = {tok: j for j, tok in enumerate(vocab)}
    lm = model.model.language_model
    emb = lm.get_input_embeddings().weight          # tied with lm_head in Qwen3-VL
    rows = torch.tensor(vocab)
    sub = torch.nn.Parameter(emb.detach()[rows].float().clone())
    layers = [p for n, p in lm.named_parameters() if not n.startswith("embed_tokens")]
    for p in layers:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([sub, *layers], lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        batch = [seqs[rng.randrange(len(seqs))] for _ in range(batch_size)]
        width = max(map(len, batch))
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, :len(s)] = torch.tensor([index[t] for t in s])
            mask[i, :len(s)] = 1
        hidden = lm(inputs_embeds=sub[ids], attention_mask=mask).last_hidden_state
        # the caption tokens against each other and against a fresh sample of the untrained rows, so
        # their logits rise above the whole vocabulary, not only above each other
        negatives = emb.detach()[torch.randint(0, emb.shape[0], (n_negatives,))].float()
        logits = hidden[:, :-1] @ torch.cat([sub, negatives]).T
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    with torch.no_grad():
        emb[rows] = sub.detach().to(emb.dtype)
    model.requires_grad_(False)
    model.eval()
    return losses


def prior_cache_dir() -> Path:
    """Where built tiny models with a language prior are kept ($VLFT_CACHE or ~/.cache/vlft)."""
    import os
    root = os.environ.get("VLFT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlft"
    return Path(root) / "tiny-prior"


def build_tiny_with_prior(target: str | Path, data_path: str | Path, family: str = "qwen3-vl", seed: int = 0,
                          steps: int = PRIOR_STEPS, cache: bool = True) -> Path:
    """The tiny model plus a short language pre-training on the captions of ``data_path``.

    A random tiny model cannot learn to caption from a few adapter steps: its frozen embeddings hold no
    words, and hidden size 64 leaves a LoRA too little room to learn a vocabulary, let alone a task. The
    prior gives it the words; the adapters then learn the task (answer the caption prompt about an image
    in the chat format), which the base still fails at. Built once per (captions, family, seed, steps) and
    copied from the cache afterwards (``cache=False``: always build)."""
    import hashlib
    import tempfile

    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    texts = prior_texts(data_path)
    if not texts:
        raise ValueError(f"{data_path}: no captions to pre-train the tiny model's language prior on")
    key_text = json.dumps([PRIOR_VERSION, family, seed, steps, texts], ensure_ascii=False)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cached = prior_cache_dir() / key
    target = Path(target)
    if cache and (cached / ".complete").is_file():
        _copy_folder(cached, target)
        return target
    build_tiny_model(target, family=family, seed=seed)
    model = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(target)
    losses = pretrain_language_prior(model, tokenizer, texts, steps=steps, seed=seed)
    model.to(torch.bfloat16).save_pretrained(target, safe_serialization=True)
    cfg_path = target / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg[TINY_MARKER] = True
    cfg[PRIOR_KEY] = {"data": str(data_path), "texts": len(texts), "steps": steps,
                      "first_loss": round(losses[0], 4), "final_loss": round(losses[-1], 4)}
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    if cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cached.parent))
        _copy_folder(target, tmp)
        (tmp / ".complete").touch()
        if cached.exists():
            shutil.rmtree(cached, ignore_errors=True)
        try:
            tmp.rename(cached)
        except OSError:  # another build finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _copy_folder(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != ".complete":
            shutil.copyfile(f, dst / f.name)


def is_tiny(model_dir: str | Path) -> bool:
    cfg = Path(model_dir) / "config.json"
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get(TINY_MARKER))
    except (OSError, ValueError):
        return False


def describe_tiny(model_dir: str | Path) -> str | None:
    """'tiny random-weight model', or with its language prior; None for any other model."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not cfg.get(TINY_MARKER):
        return None
    prior = cfg.get(PRIOR_KEY)
    if not prior:
        return "tiny random-weight model"
    return (f"tiny model with random weights and a language prior ({prior['steps']} steps of plain next-word "
            f"training on the {prior['texts']} captions of `{Path(prior['data']).name}`)")
