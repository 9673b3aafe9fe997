"""The cross-encoder path with a tiny cross-encoder built here (no reranker weights can be downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from multi_agent.rag import KnowledgeBase, RagConfig
from multi_agent.rag import rerank as rerank_mod


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A 1-layer BertForSequenceClassification (num_labels=1) with the real MiniLM WordPiece tokenizer."""
    from multi_agent.rag.embed import resolve_model_path
    from multi_agent.rag.testing import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"),
                                    resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))


def test_rerank_reorders_by_cross_encoder_scores(indexed_kb, tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    kb, _ = indexed_kb
    rkb = KnowledgeBase(kb.config.replace(reranker=str(tiny_cross_encoder), rerank_top_n=8))
    query = "how long is the learning rate warmup"
    fused = rkb.search(query, k=8, rerank=False)
    hits = rkb.search(query, k=5)
    assert all(h.scores["rerank"] is not None and h.score == h.scores["rerank"] for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the same model scored independently gives the same order over the fused top 8
    ce = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    scores = ce.predict([(query, h.text) for h in fused])
    expected = [h.chunk_id for _, h in sorted(zip(scores, fused), key=lambda t: -t[0])][:5]
    assert [h.chunk_id for h in hits] == expected
    assert expected != [h.chunk_id for h in fused[:5]]  # it did reorder
    assert {h.chunk_id for h in hits} <= {h.chunk_id for h in fused}
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert rkb.search(query, k=5, rerank=False)[0].scores["rerank"] is None


def test_missing_reranker_is_skipped_with_one_notice(indexed_kb, monkeypatch, capfd):
    kb, _ = indexed_kb
    monkeypatch.setattr(rerank_mod, "_CACHE", {})
    rkb = KnowledgeBase(kb.config.replace(reranker="BAAI/bge-reranker-base"))
    a = rkb.search("负载均衡损失", k=3)
    b = rkb.search("gradient checkpointing", k=3)
    err = capfd.readouterr().err
    assert err.count("notice: reranker 'BAAI/bge-reranker-base' is not available locally") == 1
    assert a[0].source == "zh_gbk.txt" and b[0].source == "en_guide.md"
    assert a[0].scores["rerank"] is None


def test_reranker_none_config():
    assert RagConfig(reranker="none").reranker is None
    assert rerank_mod.get_reranker(None) is None
