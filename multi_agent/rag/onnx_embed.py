"""ONNX Runtime inference for sentence-transformers embedders (the fast path of ``embed.py``).

The model is exported once with ``torch.onnx.export`` (sentence-transformers' own forward: its
pooling and normalisation are in the graph), optionally int8-quantised, and cached in
``$MULTI_AGENT_ONNX_CACHE`` (else ``$XDG_CACHE_HOME/multi_agent/onnx``, else
``~/.cache/multi_agent/onnx``) under a key of the model files, so later processes load it without
importing torch. The cache entry is written into a temp folder and renamed into place: a process
killed mid-export leaves no half model. Tokenising uses the model's own ``tokenizer.json`` through
the ``tokenizers`` library, with the truncation sentence-transformers applies (``max_seq_length``).

Quantisation (the default backend, ``onnx-int8``) is dynamic int8 of every MatMul with a weight:
7-bit weights per output channel, activations quantised per batch at run time. On a CPU without
VNNI that is ~1.5x the float model's speed, with vectors at cosine ~0.99 of float's (the
feed-forward down projections, whose post-GELU inputs have the widest range, move them most;
keeping those float halves the gain). The quantised model is kept only if it embeds a fixed probe
set within ``MIN_COSINE`` of the float model, else the float model is used (one warning).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from vlft.utils.io import make_temp_dir

log = logging.getLogger(__name__)
EXPORT_VERSION = 1            # bump when the export recipe changes
INT8_RECIPE = 2               # bump when the quantisation changes (2: every MatMul; 1 kept the down projections float)
MIN_COSINE = 0.97             # probe-set floor for keeping the int8 model (a sound export measures ~0.98)
OPSET = 17
_PROBES = [
    "How do I fine-tune Qwen2.5-VL with LoRA on a single GPU?",
    "The learning rate schedule warms up for 100 steps and then decays with a cosine curve.",
    "QLoRA stores the frozen base weights in 4-bit NF4 and trains low-rank adapters in bf16.",
    "如何防止所有词元挤到同一个专家？负载均衡损失会惩罚不均匀的路由。",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software "
    "and associated documentation files, to deal in the Software without restriction.",
    "git rebase --onto main feature~3 feature moves the last three commits of feature onto main.",
    "ERROR 2024-05-01 12:00:03 worker-7: connection reset by peer; retrying in 5 s (attempt 3/10)",
    "Table 2: recall@5 rises from 0.72 to 0.85 when jieba tokens replace whitespace tokens.",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "向量索引使用内积检索，嵌入向量先做 L2 归一化，所以内积等于余弦相似度。" * 4,
]


class OnnxUnavailable(RuntimeError):
    """The ONNX path cannot be used here (a package is missing or the export failed): use torch."""


def cache_root() -> Path:
    env = os.environ
    if env.get("MULTI_AGENT_ONNX_CACHE"):
        return Path(env["MULTI_AGENT_ONNX_CACHE"]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "multi_agent" / "onnx"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_package(model_dir: str | Path, quantize: bool) -> str | None:
    """"<package> is not installed" if running (or, without a cached export, exporting) cannot
    work here, else None. Imports nothing heavy."""
    for module in ("onnxruntime", "tokenizers"):
        if not _installed(module):
            return f"{module} is not installed"
    if not (Path(model_dir) / "tokenizer.json").is_file():
        return f"{model_dir} has no tokenizer.json"
    missing = [m for m in ("onnx", "torch", "sentence_transformers") if not _installed(m)]
    if missing and cached_meta(model_dir, quantize) is None:       # (hashes the model: only when needed)
        return f"{missing[0]} is not installed (needed once, to export the model)"
    return None


def check_available() -> None:
    """Raise OnnxUnavailable unless onnxruntime and tokenizers import."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        raise OnnxUnavailable(f"{e.name or e} is not installed") from None


def cached_meta(model_dir: str | Path, quantize: bool) -> dict | None:
    """The meta.json of this model's cached export, or None if not exported yet."""
    if not _installed("onnxruntime"):
        return None
    try:
        path = cache_root() / cache_key(Path(model_dir), quantize) / "meta.json"
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_DIGESTS: dict[tuple, str] = {}


def _file_digest(p: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for the life of the process."""
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        from vlft.utils.io import sha256_file

        _DIGESTS[key] = sha256_file(p)
    return _DIGESTS[key]


def cache_key(model_dir: Path, quantize: bool) -> str:
    """Changes with the model's files (by content: the same model in another folder, such as a
    test's seeded tiny model, reuses its export), the recipe, and the runtime version."""
    from importlib.metadata import version

    recipe = f"int8-{INT8_RECIPE}" if quantize else "False"      # (float keys as before: their exports stay)
    h = hashlib.sha256(f"{EXPORT_VERSION}|{OPSET}|{recipe}|{version('onnxruntime')}".encode())
    for p in sorted(model_dir.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.suffix not in (".md", ".onnx"):
            h.update(f"|{p.relative_to(model_dir).as_posix()}:{_file_digest(p)}".encode())
    return f"{model_dir.name}-{'int8' if quantize else 'fp32'}-{h.hexdigest()[:16]}"


def exported_model(model_dir: str | Path, quantize: bool) -> Path:
    """The cached export folder (model.onnx, tokenizer.json, meta.json) of a local model folder,
    exported now if missing. Raises OnnxUnavailable when it cannot be exported."""
    check_available()
    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise OnnxUnavailable(f"{model_dir} has no tokenizer.json (a local sentence-transformers folder is "
                              "needed for the ONNX path)")
    root = cache_root()
    final = root / cache_key(model_dir, quantize)
    if (final / "meta.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root, ".export-")
    try:
        shutil.copy2(model_dir / "tokenizer.json", tmp / "tokenizer.json")
        meta = _quantize_cached_float(model_dir, tmp) if quantize else None
        if meta is None:
            log.warning("exporting %s to ONNX%s (once; cached in %s)", model_dir.name,
                        " + int8" if quantize else "", root)
            meta = _export(model_dir, tmp, quantize)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:              # another process finished the same export first: use theirs
            if not (final / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _export(model_dir: Path, out: Path, quantize: bool) -> dict:
    """Write ``out/model.onnx``; returns the facts a session needs (inputs, max length, dim)."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise OnnxUnavailable(f"exporting needs {e.name or e}") from None
    from .embed import quiet_transformers

    quiet_transformers()
    # Eager attention exports the plain MatMul/Softmax pattern ONNX Runtime fuses on its own.
    st = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    st.eval()
    sample = st.tokenizer(["a short probe", "a second, slightly longer probe sentence"], padding=True,
                          return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.st = st

        def forward(self, *tensors):
            emb = self.st(dict(zip(names, tensors)))["sentence_embedding"]
            return torch.nn.functional.normalize(emb, p=2, dim=1)

    fp32 = out / ("model-fp32.onnx" if quantize else "model.onnx")
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    import warnings
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(Wrapped(), tuple(sample[n] for n in names), str(fp32), input_names=names,
                              output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        except Exception as e:  # noqa: BLE001 (any exporter failure: the torch path still works)
            raise OnnxUnavailable(f"torch.onnx.export failed: {type(e).__name__}: {e}") from None
    get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    meta = {"inputs": names, "max_seq_length": int(st.max_seq_length or 512), "dim": int(get_dim() or 0),
            "quantized": False,
            "pad_id": int(st.tokenizer.pad_token_id or 0), "export_version": EXPORT_VERSION}
    if quantize:
        meta.update(_quantize(fp32, out / "model.onnx", meta))
    return meta


def _quantize_cached_float(model_dir: Path, out: Path) -> dict | None:
    """The int8 model made from this model's cached float export (no torch import, no re-export),
    or None when there is none."""
    float_dir = cache_root() / cache_key(model_dir, False)
    if not (float_dir / "meta.json").is_file():
        return None
    log.warning("quantising %s's cached ONNX export to int8 (once; cached in %s)", model_dir.name, float_dir.parent)
    meta = json.loads((float_dir / "meta.json").read_text(encoding="utf-8"))
    fp32 = out / "model-fp32.onnx"
    shutil.copy2(float_dir / "model.onnx", fp32)
    meta.update(_quantize(fp32, out / "model.onnx", meta))
    return meta


def _quantize(fp32: Path, int8: Path, meta: dict) -> dict:
    """int8 copy of ``fp32`` at ``int8`` (or the float model moved there if the probes disagree);
    ``fp32`` is gone afterwards either way."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # reduce_range (7-bit weights): AVX2 without VNNI sums u8 x s8 pairs in int16, which 8-bit
    # weights can saturate; it also measured closer to float here.
    logging.disable(logging.WARNING)         # its root-logger advice to "pre-process" first
    try:
        quantize_dynamic(str(fp32), str(int8), per_channel=True, reduce_range=True,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        logging.disable(logging.NOTSET)
    ref = OnnxSession(fp32.parent, meta, model_file=fp32.name, threads=0)
    new = OnnxSession(fp32.parent, meta, model_file=int8.name, threads=0)
    cos = float((ref.encode(_PROBES) * new.encode(_PROBES)).sum(1).min())
    if cos < MIN_COSINE:
        log.warning("int8 model moved probe embeddings to cosine %.4f < %.3f of float: using float", cos,
                    MIN_COSINE)
        os.replace(fp32, int8)
        return {"quantized": False, "probe_min_cosine": round(cos, 5)}
    fp32.unlink()
    return {"quantized": True, "probe_min_cosine": round(cos, 5), "int8_recipe": INT8_RECIPE}


class OnnxSession:
    """An exported model folder loaded in ONNX Runtime: texts -> L2-normalised float32 vectors."""

    def __init__(self, folder: Path, meta: dict | None = None, model_file: str = "model.onnx",
                 threads: int = 0):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.meta = meta or json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads          # 0: one per physical core
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Idle threads sleep instead of spinning: the same speed here, less CPU taken from other work.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(folder / model_file), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(self.meta["max_seq_length"]))
        self.dim = int(self.meta["dim"])

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        # sentence-transformers strips each text before tokenising.
        return [e.ids for e in self.tokenizer.encode_batch([t.strip() for t in texts])]

    def run(self, ids: list[list[int]]) -> np.ndarray:
        """One padded batch of token ids -> vectors."""
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), int(self.meta["pad_id"]), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
        out = self.session.run(None, {n: feed[n] for n in self.meta["inputs"]})[0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        from .embed import by_length

        ids = self.tokenize(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for rows in by_length([len(x) for x in ids], batch_size):
            out[rows] = self.run([ids[r] for r in rows])
        return out
