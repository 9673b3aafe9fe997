"""RRF: k = 60, weights, de-duplication by chunk id (not by text)."""

from __future__ import annotations

import pytest

from multi_agent.rag.fusion import rrf


def test_rrf_scores_and_order():
    out = dict(rrf({"bm25": ["a", "b", "c"], "dense": ["b", "d"]}, {"bm25": 1.0, "dense": 1.0}, k=60))
    assert out["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert out["a"] == pytest.approx(1 / 61)
    assert list(out)[:2] == ["b", "a"]
    assert len(out) == 4  # b counted once


def test_weights_and_duplicates_in_one_list():
    out = dict(rrf({"bm25": ["a", "a", "b"], "dense": ["b"]}, {"bm25": 1.0, "dense": 0.0}, k=60))
    assert out["a"] == pytest.approx(1 / 61)  # repeated id keeps its best rank only
    assert out["b"] == pytest.approx(1 / 63)


def test_strong_sparse_hit_survives_noisy_dense_list_at_cjk_weight():
    # BM25 rank 1 is absent from a (noise) dense list: with equal weights chunks mid-ranked in
    # both bury it; at the default CJK dense weight 0 BM25 decides and dense only fills in after.
    lists = {"bm25": ["hit"] + [f"x{i}" for i in range(10)], "dense": [f"x{i}" for i in range(10)][::-1] + ["d"]}
    equal = [c for c, _ in rrf(lists, {"bm25": 1.0, "dense": 1.0}, k=60)]
    assert equal.index("hit") > 3
    cjk = [c for c, _ in rrf(lists, {"bm25": 1.0, "dense": 0.0}, k=60)]
    assert cjk == lists["bm25"] + ["d"]
