"""The one small interface every vector store implements (ids are int64 chunk row ids)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class VectorStore(ABC):
    """Inner-product search over L2-normalised vectors (== cosine similarity).

    ``shared`` stores (Milvus) live outside the index version folder, so changes are
    visible to older versions at once: the indexer adds before its commit and removes
    after it, and search drops ids that the loaded version does not know.
    """

    shared: bool = False

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids: (n,) int64; vectors: (n, dim) float32, L2-normalised. Re-adding an id replaces it."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None: ...

    @abstractmethod
    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """vector: (dim,) -> up to k (id, cosine) best first."""

    @abstractmethod
    def reset(self) -> None:
        """Drop every vector (full rebuild, e.g. after the embedder changed)."""

    @abstractmethod
    def save(self, version_dir: Path) -> None:
        """Persist into a new index version folder (a no-op for shared stores)."""

    @abstractmethod
    def __len__(self) -> int: ...

    def close(self) -> None:
        pass
