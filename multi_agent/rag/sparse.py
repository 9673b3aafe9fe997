"""Sparse retrieval: bm25s over jieba/English tokens, saved beside the dense index.

BM25's IDF is corpus-wide, so the sparse index is rebuilt from the cached token lists
whenever files change (cheap: no re-tokenizing, ~0.1 s per 10k chunks); only the dense
side is truly incremental, because embedding is the slow part.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bm25s
import numpy as np

# After bm25s's own import, which sets its logger to DEBUG ("Building index from tokens" per build).
logging.getLogger("bm25s").setLevel(logging.WARNING)


class SparseIndex:
    def __init__(self, bm25=None):
        self._bm25 = bm25  # None when the corpus is empty

    @classmethod
    def build(cls, token_lists: list[list[str]]) -> "SparseIndex":
        if not token_lists:
            return cls(None)
        bm25 = bm25s.BM25()  # lucene variant, k1=1.5, b=0.75
        bm25.index(token_lists, show_progress=False)
        return cls(bm25)

    def search(self, query_tokens: list[str], k: int) -> list[tuple[int, float]]:
        """Top-k (row, score) with score > 0; rows index the chunk table."""
        if self._bm25 is None:
            return []
        vocab = self._bm25.vocab_dict
        ids = [vocab[t] for t in query_tokens if t in vocab]
        if not ids:
            return []
        scores = self._bm25.get_scores_from_ids(ids)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def save(self, path: Path) -> None:
        if self._bm25 is not None:
            self._bm25.save(str(path))

    @classmethod
    def load(cls, path: Path) -> "SparseIndex":
        if not (path / "params.index.json").exists():
            return cls(None)
        return cls(bm25s.BM25.load(str(path)))
