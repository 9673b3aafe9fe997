"""Reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), rank 1-based.

Lists are keyed by chunk id, so the same chunk found by BM25 and by the dense index is
one candidate (two different chunks with equal text stay two).
"""

from __future__ import annotations


def rrf(ranked_lists: dict[str, list[str]], weights: dict[str, float], k: int = 60) -> list[tuple[str, float]]:
    """ranked_lists: name -> chunk ids best first. Returns (chunk id, fused score) best first;
    ties keep the order of first appearance (earlier lists, better ranks first)."""
    scores: dict[str, float] = {}
    for name, ids in ranked_lists.items():
        w = weights.get(name, 1.0)
        seen: set[str] = set()
        for rank, cid in enumerate(ids, start=1):
            if cid in seen:  # a list may repeat a chunk: only its best rank counts
                continue
            seen.add(cid)
            scores[cid] = scores.get(cid, 0.0) + w / (k + rank)
    order = {cid: i for i, cid in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
