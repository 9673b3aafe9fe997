"""Milvus Lite behind the same VectorStore interface gives the same results as FAISS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rag_files import EN_GUIDE, QUERIES

import multi_agent.rag.index as index_mod
from multi_agent.rag import KnowledgeBase, RagConfig
from multi_agent.rag.stores import STORES, open_store

pytest.importorskip("milvus_lite")


def _cfg(kb_dir: Path, **kw) -> RagConfig:
    return RagConfig(kb_dir=kb_dir, reranker=None, chunk_size=200, chunk_overlap=40, **kw)


@pytest.mark.parametrize("name", sorted(STORES))
def test_store_interface(tmp_path, name):
    cfg = _cfg(tmp_path / "kb", store=name)
    store = open_store(cfg, 4, None)
    vecs = np.eye(4, dtype=np.float32)
    store.add(np.arange(10, 14), vecs)
    assert len(store) == 4
    assert store.search(np.array([0, 1, 0, 0], dtype=np.float32), 2)[0] == (11, pytest.approx(1.0))
    store.add(np.array([11]), np.array([[0, 0, 0, 1]], dtype=np.float32))  # replace, not duplicate
    assert len(store) == 4 and store.search(np.array([0, 0, 0, 1.0], dtype=np.float32), 1)[0][0] in (11, 13)
    store.remove(np.array([10, 11]))
    assert len(store) == 2 and {i for i, _ in store.search(vecs[0], 5)} == {12, 13}
    store.reset()
    assert len(store) == 0


def test_milvus_lite_matches_faiss_and_updates_incrementally(kb_dir, indexed_kb, tmp_path, monkeypatch):
    faiss_kb, _ = indexed_kb
    cfg = _cfg(kb_dir, store="milvus")
    assert cfg.resolved_milvus_uri == str(kb_dir / ".index" / "milvus.db")  # a Milvus Lite file by default
    kb = KnowledgeBase(cfg)
    rep = kb.index()
    assert rep.chunks == faiss_kb.index().chunks
    assert (kb_dir / ".index" / "milvus.db").exists()
    assert not (kb_dir / ".index" / rep.version / "faiss.index").exists()
    for q in QUERIES:
        m, f = kb.search(q, k=3), faiss_kb.search(q, k=3)
        assert [h.chunk_id for h in m] == [h.chunk_id for h in f], q
        for a, b in zip(m, f):
            assert a.scores["dense"] == pytest.approx(b.scores["dense"], abs=1e-4)

    store = kb._snapshot().store
    n = len(store)
    assert n == rep.chunks
    # A crash after the new vectors reached Milvus: the old version ignores the extra ids.
    (kb_dir / "en_guide.md").write_text(EN_GUIDE + "\nEvaluation uses beam search with four beams.\n",
                                        encoding="utf-8")

    def crash(at):
        if at == "vectors-added":
            raise RuntimeError("injected")

    monkeypatch.setattr(index_mod, "_checkpoint", crash)
    with pytest.raises(RuntimeError):
        kb.index()
    monkeypatch.setattr(index_mod, "_checkpoint", lambda at: None)
    assert len(store) > n  # orphans are in the shared store...
    fresh = KnowledgeBase(cfg)
    hits = fresh.search("how many beams does evaluation use", k=5)
    assert all("four beams" not in h.text for h in hits)  # ...but never returned
    known = {c.chunk_id for c in fresh._snapshot().chunks}
    assert all(h.chunk_id in known for h in hits)

    rep2 = fresh.index()
    assert (rep2.changed, rep2.embedded) == (1, {f["path"]: f for f in fresh.files()}["en_guide.md"]["chunks"])
    assert "four beams" in fresh.search("how many beams does evaluation use", k=1)[0].text
    assert len(store) == rep2.chunks  # replaced chunks deleted after the commit
