"""Milvus through pymilvus: a Milvus Lite file (``*.db``) by default, or a server URI."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .base import VectorStore

_CLIENTS: dict[str, object] = {}  # one client per URI per process (Milvus Lite locks its file)
_LOCK = threading.Lock()
_BATCH = 1000


def _client(uri: str):
    from pymilvus import MilvusClient

    with _LOCK:
        if uri not in _CLIENTS:
            if "://" not in uri:
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
            _CLIENTS[uri] = MilvusClient(uri)
        return _CLIENTS[uri]


class MilvusStore(VectorStore):
    shared = True

    def __init__(self, uri: str, collection: str, dim: int):
        self.uri, self.collection, self.dim = uri, collection, dim
        self._c = _client(uri)
        self._ensure()

    @classmethod
    def open(cls, cfg, dim: int, version_dir: Path | None) -> "MilvusStore":
        return cls(cfg.resolved_milvus_uri, cfg.milvus_collection, dim)

    def _ensure(self) -> None:
        if self._c.has_collection(self.collection):
            fields = self._c.describe_collection(self.collection).get("fields", [])
            dims = [f.get("params", {}).get("dim") for f in fields if f.get("name") == "vector"]
            if dims and int(dims[0]) == self.dim:
                return
            self._c.drop_collection(self.collection)  # embedder changed: the indexer re-embeds all
        self._c.create_collection(self.collection, dimension=self.dim, metric_type="IP", id_type="int",
                                  auto_id=False, primary_field_name="id", vector_field_name="vector",
                                  consistency_level="Strong")

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for a in range(0, len(ids), _BATCH):
            rows = [{"id": int(i), "vector": v.tolist()}
                    for i, v in zip(ids[a:a + _BATCH], vectors[a:a + _BATCH])]
            self._c.upsert(self.collection, rows)

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in ids]
        for a in range(0, len(ids), _BATCH):
            self._c.delete(self.collection, ids=ids[a:a + _BATCH])

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        res = self._c.search(self.collection, [np.asarray(vector, dtype=np.float32).tolist()],
                             limit=min(k, 16384), output_fields=["id"])
        return [(int(h["id"]), float(h["distance"])) for h in res[0]]

    def reset(self) -> None:
        self._c.drop_collection(self.collection)
        self._ensure()

    def save(self, version_dir: Path) -> None:
        pass  # lives in the Milvus database; the version's chunk table says which ids are live

    def __len__(self) -> int:
        return int(self._c.get_collection_stats(self.collection).get("row_count", 0))
