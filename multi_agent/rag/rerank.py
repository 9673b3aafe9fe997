"""Cross-encoder reranking of the fused top N (sentence-transformers CrossEncoder).

The default BAAI/bge-reranker-base is used only when it is already on disk (a local path
or the Hugging Face cache): nothing is downloaded at query time. If it is missing, search
prints ONE notice per process and returns the fused order.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_CACHE: dict[tuple[str, str | None], "Reranker | None"] = {}
_LOCK = threading.Lock()


class Reranker:
    def __init__(self, model, name: str):
        self.model, self.name = model, name

    def score(self, query: str, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(n,) relevance scores (model logits; higher is more relevant)."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        out = self.model.predict([(query, t) for t in texts], batch_size=batch_size,
                                 show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)[:, -1]


def _load(name: str, device: str | None) -> Reranker | None:
    from sentence_transformers import CrossEncoder

    from .embed import quiet_transformers

    quiet_transformers()
    local = Path(name).expanduser()
    try:
        if local.exists():
            model = CrossEncoder(str(local), device=device)
        else:
            model = CrossEncoder(name, device=device, local_files_only=True)
    except Exception as e:  # not cached / no network / broken files: rerank is optional
        print(f"notice: reranker '{name}' is not available locally ({e.__class__.__name__}); "
              "results are not reranked (set reranker to a local cross-encoder path or 'none')",
              file=sys.stderr)
        log.debug("reranker load failed", exc_info=True)
        return None
    return Reranker(model, name)


def get_reranker(name: str | None, device: str | None = None) -> Reranker | None:
    """Process-wide cache, failures included (so the notice is printed once)."""
    if not name:
        return None
    key = (name, device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(name, device)
        return _CACHE[key]
