"""FAISS: IndexIDMap2 over a flat inner-product index, one file per index version."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import VectorStore

FILE = "faiss.index"


class FaissStore(VectorStore):
    shared = False

    def __init__(self, dim: int, index=None):
        import faiss

        self.dim = dim
        # Flat = exact search; 10k x 384 floats is 15 MB and ~2 ms/query on one core.
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @classmethod
    def open(cls, cfg, dim: int, version_dir: Path | None) -> "FaissStore":
        import faiss

        path = version_dir / FILE if version_dir is not None else None
        if path is not None and path.exists():
            index = faiss.read_index(str(path))
            if index.d == dim:
                return cls(dim, index)
        return cls(dim)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            ids = np.asarray(ids, dtype=np.int64)
            self.remove(ids)  # IDMap2 keeps duplicates otherwise
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def remove(self, ids: np.ndarray) -> None:
        import faiss

        if len(ids):
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self._index.ntotal == 0:
            return []
        k = min(k, self._index.ntotal)
        scores, ids = self._index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def reset(self) -> None:
        self._index.reset()

    def save(self, version_dir: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(version_dir / FILE))

    def __len__(self) -> int:
        return int(self._index.ntotal)
