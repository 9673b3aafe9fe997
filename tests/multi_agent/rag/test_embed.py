"""Embedding backends (issue 22, first index speed): the ONNX path against the torch reference on
the real all-MiniLM-L6-v2, order after length sorting, an index built and queried through it,
the torch fallback, and the export cache written atomically."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from multi_agent.rag import KnowledgeBase, RagConfig
from multi_agent.rag import onnx_embed
from multi_agent.rag.config import DEFAULT_EMBEDDER
from multi_agent.rag.embed import Embedder, get_embedder
from rag_files import QUERIES

TEXTS = [
    "How do I fine-tune Qwen2.5-VL with LoRA?",
    "  leading and trailing spaces are stripped  ",
    "负载均衡损失会惩罚不均匀的路由，防止所有词元挤到同一个专家。",
    "x",
    "The adapter rank controls capacity. " * 60,            # far over 256 tokens: truncated the same way
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "git rebase --onto main feature~3 feature",
    "混合专家 MoE-LoRA mixes English and 中文 in one chunk; 梯度检查点 saves memory.",
]


@pytest.fixture(scope="module")
def torch_embedder():
    return get_embedder(DEFAULT_EMBEDDER, None, "torch")


@pytest.fixture(scope="module")
def float_embedder():
    return get_embedder(DEFAULT_EMBEDDER, None, "onnx")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1)


def test_onnx_vectors_match_torch(torch_embedder, float_embedder):
    """The ONNX float backend gives the reference path's vectors."""
    assert float_embedder.backend == "onnx"
    ref, new = torch_embedder.encode(TEXTS), float_embedder.encode(TEXTS)
    assert new.shape == ref.shape == (len(TEXTS), 384) and new.dtype == np.float32
    assert _cos(ref, new).min() >= 0.999
    assert np.allclose(np.linalg.norm(new, axis=1), 1.0, atol=1e-4)


def test_the_default_backend_is_every_matmul_int8_and_stays_close_to_torch(torch_embedder, embedder):
    """The default quantises every weight MatMul (the down projections too: leaving them float
    halves the speed-up) and keeps the vectors near the reference's."""
    import onnx

    assert embedder.backend == "onnx-int8"
    session = embedder.model.session
    assert session.meta["quantized"] and session.meta["int8_recipe"] == onnx_embed.INT8_RECIPE
    from multi_agent.rag.embed import resolve_model_path

    graph = onnx.load(str(onnx_embed.exported_model(resolve_model_path("default"), True) / "model.onnx")).graph
    weights = {t.name for t in graph.initializer}
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 36        # 6 layers x (q k v o up down)
    cos = _cos(torch_embedder.encode(TEXTS), embedder.encode(TEXTS))
    assert cos.min() >= 0.97 and cos.mean() >= 0.985     # close, not equal


def test_length_sorted_batches_keep_each_row_its_own_vector(float_embedder, embedder):
    texts = TEXTS * 2
    seen, lengths = [], []
    ids = float_embedder.model.session.tokenize(texts)
    for rows, vecs in float_embedder.batches(texts, batch_size=3):
        assert len(rows) == len(vecs) <= 3
        seen += rows
        lengths += [len(ids[r]) for r in rows]
    assert sorted(seen) == list(range(len(texts))) and lengths == sorted(lengths)
    batched = float_embedder.encode(texts, batch_size=3)
    alone = np.concatenate([float_embedder.encode([t]) for t in texts])     # no padding, no sorting
    assert _cos(batched, alone).min() >= 0.9999
    # int8 quantises each batch's activations with one scale, so batch-mates move a vector a little.
    batched = embedder.encode(texts, batch_size=3)
    alone = np.concatenate([embedder.encode([t]) for t in texts])
    assert 0.96 <= _cos(batched, alone).min() < 0.9999


def test_index_built_with_onnx_is_searched_end_to_end(kb_dir, embedder, torch_embedder):
    """A first index through the default backend (real FAISS + BM25 on disk): the manifest records
    the backend, a fresh reader uses it, the stored vectors are close to torch's, hits are right."""
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, chunk_size=200))
    rep = kb.index()
    assert rep.embedded == rep.chunks > 0
    version = (kb_dir / ".index" / "CURRENT").read_text().strip()
    manifest = json.loads((kb_dir / ".index" / version / "manifest.json").read_text())
    assert manifest["settings"]["embed_backend"] == "onnx-int8"
    assert manifest["settings"]["chunk_overlap"] == 40 and manifest["settings"]["chunk_size"] == 200
    fresh = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None))
    assert fresh.settings().embed_backend == "onnx-int8" and fresh.embedder is embedder
    snap = fresh._snapshot()
    some = snap.chunks[:6]
    stored = np.stack([snap.store._index.reconstruct(int(c.vid)) for c in some])
    assert _cos(stored, torch_embedder.encode([c.text for c in some])).min() >= 0.97
    for query in ("how does gradient checkpointing save GPU memory", "负载均衡损失有什么作用"):
        source, needle, _ = QUERIES[query]
        top = fresh.search(query, k=1, rerank=False)[0]
        assert (top.source, needle in top.text) == (source, True)


def test_an_index_from_before_the_backend_setting_keeps_torch(kb_dir, torch_embedder):
    """Indexes written before embed_backend existed were embedded with torch: they are neither
    rebuilt nor queried with another backend."""
    cfg = RagConfig(kb_dir=kb_dir, reranker=None, chunk_size=200, embed_backend="torch")
    KnowledgeBase(cfg).index()
    version = (kb_dir / ".index" / "CURRENT").read_text().strip()
    path = kb_dir / ".index" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["settings"]["embed_backend"]
    path.write_text(json.dumps(manifest))
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None))
    assert kb.settings().embed_backend == "torch" and kb.embedder is torch_embedder
    n0 = torch_embedder.n_embedded
    assert kb.index().embedded == 0 and torch_embedder.n_embedded == n0
    assert kb.search("负载均衡损失", k=1, rerank=False)


def test_identical_chunks_are_embedded_once(tmp_path, embedder):
    """Repeated texts (licence paragraphs) are embedded once per run, also across embedding blocks
    (batch_size 1: blocks of 8 chunks), and every copy is still found."""
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    text = "Licence boilerplate repeated in every file. Each copy must still be found.\n"
    names = [f"copy{i:02d}.txt" for i in range(12)]
    for name in names:
        (kb_dir / name).write_text(text, encoding="utf-8")
    (kb_dir / "other.txt").write_text("Something else entirely about learning rates.\n", encoding="utf-8")
    n0 = embedder.n_embedded
    cfg = RagConfig(kb_dir=kb_dir, reranker=None, batch_size=1)
    rep = KnowledgeBase(cfg).index()
    assert rep.embedded == rep.chunks == 13 and embedder.n_embedded - n0 == 2
    hits = KnowledgeBase(cfg).search("licence boilerplate", k=12, rerank=False)
    assert {h.source for h in hits} == set(names)
    snap = KnowledgeBase(cfg)._snapshot()
    vecs = np.stack([snap.store._index.reconstruct(int(c.vid)) for c in snap.chunks])
    alone = np.concatenate([embedder.encode([c.text]) for c in snap.chunks])   # as indexed: batch_size 1
    assert _cos(vecs, alone).min() >= 0.9999


def test_without_onnxruntime_the_torch_path_is_used(monkeypatch, caplog, torch_embedder):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)        # import onnxruntime -> ImportError
    e = Embedder(DEFAULT_EMBEDDER, None, "onnx")
    assert e.backend == "torch"                                   # known before loading: what an index records
    with caplog.at_level(logging.WARNING, logger="multi_agent.rag.embed"):
        vecs = e.encode(TEXTS[:3])
    assert e.backend == "torch" and "onnxruntime is not installed" in caplog.text
    assert _cos(vecs, torch_embedder.encode(TEXTS[:3])).min() >= 0.9999
    with pytest.raises(onnx_embed.OnnxUnavailable, match="onnxruntime"):
        onnx_embed.check_available()


def test_export_failure_leaves_no_cache_entry_and_success_is_renamed_in(tmp_path, monkeypatch):
    """The export is written into a temp folder and renamed: a failure (or a kill) mid-export
    leaves nothing a later process would take for a model."""
    from multi_agent.rag.embed import resolve_model_path

    cache = tmp_path / "cache"
    monkeypatch.setenv("MULTI_AGENT_ONNX_CACHE", str(cache))
    model_dir = Path(resolve_model_path("default"))

    def broken(src, out, quantize):
        (out / "model.onnx").write_bytes(b"half a model")
        raise onnx_embed.OnnxUnavailable("torch.onnx.export failed: simulated")

    monkeypatch.setattr(onnx_embed, "_export", broken)
    with pytest.raises(onnx_embed.OnnxUnavailable, match="simulated"):
        onnx_embed.exported_model(model_dir, quantize=False)
    assert list(cache.iterdir()) == []
    assert onnx_embed.cached_meta(model_dir, quantize=False) is None

    def fine(src, out, quantize):
        assert out.parent == cache and out.name.startswith(".export-") and not (out / "meta.json").exists()
        (out / "model.onnx").write_bytes(b"model")
        return {"inputs": ["input_ids"], "max_seq_length": 8, "dim": 4, "quantized": False, "pad_id": 0}

    monkeypatch.setattr(onnx_embed, "_export", fine)
    folder = onnx_embed.exported_model(model_dir, quantize=False)
    assert [p.name for p in cache.iterdir()] == [folder.name]
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.onnx", "tokenizer.json"]
    assert onnx_embed.cached_meta(model_dir, quantize=False)["dim"] == 4
    assert oct(folder.stat().st_mode & 0o777) != oct(0o700)       # the umask's mode, not mkdtemp's
    monkeypatch.setattr(onnx_embed, "_export", broken)            # cached: never exported again
    assert onnx_embed.exported_model(model_dir, quantize=False) == folder


def test_without_the_exporter_and_no_cached_export_torch_is_expected(tmp_path, monkeypatch):
    """What an index records is decided before loading: with onnx (the exporter's dependency)
    missing and nothing cached, the backend is torch; with a cached export it stays onnx."""
    from multi_agent.rag.embed import expected_backend

    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setenv("MULTI_AGENT_ONNX_CACHE", str(tmp_path / "empty-cache"))
    assert expected_backend(DEFAULT_EMBEDDER, None, "onnx") == "torch"
    monkeypatch.delenv("MULTI_AGENT_ONNX_CACHE")
    for backend in ("onnx", "onnx-int8"):     # both exports exist in the user cache
        assert get_embedder(DEFAULT_EMBEDDER, None, backend).backend == backend
        assert expected_backend(DEFAULT_EMBEDDER, None, backend) == backend
    assert expected_backend(DEFAULT_EMBEDDER, "cuda", "onnx") == "torch"


def test_asking_for_another_backend_rebuilds_the_index(kb_dir, embedder, torch_embedder):
    cfg = RagConfig(kb_dir=kb_dir, reranker=None, chunk_size=200)
    first = KnowledgeBase(cfg).index()
    rep = KnowledgeBase(cfg.replace(embed_backend="torch")).index()
    assert rep.embedded == rep.chunks == first.chunks
    assert KnowledgeBase(cfg).settings().embed_backend == "torch"
    assert KnowledgeBase(cfg).index().embedded == 0              # and then it is the index's own


def test_the_int8_export_quantises_a_cached_float_export_without_exporting_again(tmp_path, monkeypatch,
                                                                                 float_embedder):
    """Someone with the float export cached (the earlier default) gets int8 without torch's export."""
    from multi_agent.rag.embed import resolve_model_path

    model_dir = Path(resolve_model_path("default"))
    float_dir = onnx_embed.exported_model(model_dir, quantize=False)      # the user cache's, made by the fixture
    cache = tmp_path / "cache"
    monkeypatch.setenv("MULTI_AGENT_ONNX_CACHE", str(cache))
    shutil.copytree(float_dir, cache / float_dir.name)

    def no_export(src, out, quantize):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_embed, "_export", no_export)
    folder = onnx_embed.exported_model(model_dir, quantize=True)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["quantized"] and meta["probe_min_cosine"] >= onnx_embed.MIN_COSINE
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.onnx", "tokenizer.json"]
    assert sorted(p.name for p in cache.iterdir()) == sorted([float_dir.name, folder.name])


def test_an_int8_model_that_fails_the_probe_check_is_replaced_by_float(tmp_path, monkeypatch, float_embedder):
    """Below MIN_COSINE on the probes the int8 slot holds the float model, and the backend says so."""
    from multi_agent.rag.embed import expected_backend, resolve_model_path

    model_dir = Path(resolve_model_path("default"))
    float_dir = onnx_embed.exported_model(model_dir, quantize=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("MULTI_AGENT_ONNX_CACHE", str(cache))
    shutil.copytree(float_dir, cache / float_dir.name)
    monkeypatch.setattr(onnx_embed, "MIN_COSINE", 1.01)
    folder = onnx_embed.exported_model(model_dir, quantize=True)
    assert not json.loads((folder / "meta.json").read_text())["quantized"]
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.onnx", "tokenizer.json"]
    assert (folder / "model.onnx").read_bytes() == (float_dir / "model.onnx").read_bytes()
    assert expected_backend(DEFAULT_EMBEDDER, None, "onnx-int8") == "onnx"
    e = Embedder(DEFAULT_EMBEDDER, None, "onnx-int8")
    assert _cos(e.encode(TEXTS), float_embedder.encode(TEXTS)).min() >= 0.9999 and e.backend == "onnx"
