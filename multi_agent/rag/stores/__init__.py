"""Vector stores behind one interface; pick one by name (RagConfig.store)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .base import VectorStore


def _faiss(cfg, dim: int, version_dir: Path | None) -> VectorStore:
    from .faiss_store import FaissStore
    return FaissStore.open(cfg, dim, version_dir)


def _milvus(cfg, dim: int, version_dir: Path | None) -> VectorStore:
    from .milvus_store import MilvusStore
    return MilvusStore.open(cfg, dim, version_dir)


STORES: dict[str, Callable[..., VectorStore]] = {"faiss": _faiss, "milvus": _milvus}


def open_store(cfg, dim: int, version_dir: Path | None) -> VectorStore:
    return STORES[cfg.store](cfg, dim, version_dir)


__all__ = ["STORES", "VectorStore", "open_store"]
