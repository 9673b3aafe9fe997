"""End to end through the real parts: files on disk -> index on disk -> hybrid search."""

from __future__ import annotations

from pathlib import Path

import pytest
from rag_files import EN_GUIDE, QUERIES

from multi_agent.rag import Hit, KnowledgeBase, RagConfig
from multi_agent.rag.index import current_version
from multi_agent.rag.tokenize import tokenize


def _cfg(kb_dir: Path, **kw) -> RagConfig:
    return RagConfig(kb_dir=kb_dir, reranker=None, chunk_size=200, chunk_overlap=40, **kw)


def test_index_report_counts_and_skip_reasons(indexed_kb):
    kb, report = indexed_kb
    assert report.added == 5  # en_guide.md, zh_gbk.txt, zh_utf16.txt, zh_big5.txt, report.pdf
    assert report.changed == report.deleted == report.unchanged == 0
    reasons = dict(report.skipped)
    assert set(reasons) == {"locked.pdf", "scanned.pdf", "corrupt.pdf", "empty.txt"}
    assert [p for p, _ in report.ignored] == ["photo.png"]   # not a document: counted, not an error
    assert "encrypted PDF" in reasons["locked.pdf"]
    assert "no extractable text" in reasons["scanned.pdf"]
    assert "corrupt" in reasons["corrupt.pdf"]
    assert reasons["empty.txt"] == "empty file"
    assert "not a document" in dict(report.ignored)["photo.png"]
    assert report.chunks == report.embedded == sum(f["chunks"] for f in kb.files())
    files = {f["path"]: f for f in kb.files()}
    assert files["report.pdf"]["pages"] == 3 and files["zh_gbk.txt"]["pages"] == 1


def test_the_folders_own_index_is_not_counted_when_the_index_lives_elsewhere(tmp_path):
    """An index built elsewhere (an app profile, the screenshot script) over a folder that also has its
    own .index: that folder is no document, not even an ignored one; other hidden folders still count."""
    kb_dir = tmp_path / "kb"
    (kb_dir / ".index" / "v1").mkdir(parents=True)
    (kb_dir / ".index" / "v1" / "chunks.jsonl").write_text("{}\n", encoding="utf-8")
    (kb_dir / ".drafts").mkdir()
    (kb_dir / "guide.md").write_text(EN_GUIDE, encoding="utf-8")
    report = KnowledgeBase(_cfg(kb_dir, index_dir=tmp_path / "elsewhere")).index()
    assert report.added == 1
    assert [p for p, _ in report.ignored] == [".drafts/"]


@pytest.mark.parametrize("query", list(QUERIES))
def test_named_queries_find_the_right_chunk_top1(indexed_kb, query):
    kb, _ = indexed_kb
    source, needle, page = QUERIES[query]
    hits = kb.search(query, k=3)
    top = hits[0]
    assert (top.source, top.page) == (source, page), [(h.source, h.page, h.text[:40]) for h in hits]
    assert needle in top.text
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits == sorted(hits, key=lambda h: -h.score)


def test_chinese_queries_have_bm25_scores_and_keep_bm25_top1(indexed_kb):
    kb, _ = indexed_kb
    snap = kb._snapshot()
    for query, (source, needle, _) in QUERIES.items():
        if not any("\u4e00" <= c <= "\u9fff" for c in query):
            continue
        bm25_top = snap.chunks[snap.sparse.search(tokenize(query), 1)[0][0]]
        top = kb.search(query, k=1)[0]
        assert top.scores["bm25"] and top.scores["bm25"] > 0  # the seed's BM25 scored 0 here
        assert top.chunk_id == bm25_top.chunk_id  # the fused order did not bury the BM25 hit


def test_hit_offsets_point_into_the_source(indexed_kb):
    kb, _ = indexed_kb
    gbk = kb.search("负载均衡损失", k=1)[0]
    text = (kb.config.kb_dir / gbk.source).read_bytes().decode("gbk")
    assert text[gbk.start:gbk.end] == gbk.text
    pdf = kb.search("vision encoder patch size in pixels", k=1)[0]
    import pypdf

    page_text = pypdf.PdfReader(kb.config.kb_dir / pdf.source).pages[pdf.page - 1].extract_text()
    assert page_text[pdf.start:pdf.end] == pdf.text
    assert isinstance(pdf, Hit) and pdf.chunk_id.startswith("report.pdf#")
    assert set(pdf.scores) == {"bm25", "dense", "rrf", "rerank"} and pdf.scores["rerank"] is None


def test_search_loads_once_and_never_rebuilds(indexed_kb, monkeypatch):
    kb, _ = indexed_kb
    kb.search("warmup", k=1)
    import multi_agent.rag.kb as kb_mod

    def boom(*a, **k):
        raise AssertionError("index rebuilt or reloaded during search")

    monkeypatch.setattr(kb_mod, "build_index", boom)
    monkeypatch.setattr(kb_mod, "load_snapshot", boom)
    for q in QUERIES:
        kb.search(q, k=2)


def test_incremental_update_touches_only_changed_files(kb_dir, embedder):
    kb = KnowledgeBase(_cfg(kb_dir))
    first = kb.index()
    before = {f["path"]: f for f in kb.files()}
    again = kb.index()
    assert (again.embedded, again.touched, again.version) == (0, 0, first.version)

    (kb_dir / "en_guide.md").write_text(EN_GUIDE + "\nEvaluation uses beam search with four beams.\n",
                                        encoding="utf-8")
    (kb_dir / "zh_big5.txt").unlink()
    (kb_dir / "sub").mkdir()
    (kb_dir / "sub" / "new.md").write_text("Dropout of 0.05 regularises the adapters.\n", encoding="utf-8")
    n0 = embedder.n_embedded
    rep = kb.index()
    assert (rep.added, rep.changed, rep.deleted, rep.unchanged) == (1, 1, 1, 3)
    files = {f["path"]: f for f in kb.files()}
    expected = files["en_guide.md"]["chunks"] + files["sub/new.md"]["chunks"]
    assert rep.embedded == expected == embedder.n_embedded - n0  # nothing else was re-embedded
    assert "zh_big5.txt" not in files and files["zh_gbk.txt"] == before["zh_gbk.txt"]
    assert rep.chunks == sum(f["chunks"] for f in files.values())
    assert kb.search("how many beams does evaluation use", k=1)[0].source == "en_guide.md"
    assert kb.search("dropout regularises adapters", k=1)[0].source == "sub/new.md"
    assert all(h.source != "zh_big5.txt" for h in kb.search("繁體中文說明文件", k=5))
    # one version on disk, no leftovers
    versions = [p.name for p in kb.config.index_dir.iterdir() if p.is_dir()]
    assert versions == [current_version(kb.config.index_dir)]


def test_fixed_bad_file_is_indexed_next_run(kb_dir, embedder):
    kb = KnowledgeBase(_cfg(kb_dir))
    kb.index()
    (kb_dir / "empty.txt").write_text("Now the file explains the reviewer agent retry loop.", encoding="utf-8")
    rep = kb.index()
    assert (rep.added, rep.changed, rep.embedded) == (1, 0, 1)
    assert "empty.txt" not in dict(rep.skipped)


def test_add_files_copies_into_kb_and_indexes(tmp_path, kb_dir, embedder):
    kb = KnowledgeBase(_cfg(kb_dir))
    kb.index()
    outside = tmp_path / "paper.md"
    outside.write_text("The paper proposes token-level expert routing for captioning.", encoding="utf-8")
    clash = tmp_path / "other" / "en_guide.md"
    clash.parent.mkdir()
    clash.write_text("A different guide about batch size 16.", encoding="utf-8")
    rep = kb.add_files([outside, clash])
    assert rep.added == 2 and (kb_dir / "paper.md").exists() and (kb_dir / "en_guide-1.md").exists()
    assert kb.search("token-level expert routing", k=1)[0].source == "paper.md"
    assert kb.add_files([outside]).touched == 0  # same content: not copied twice


def test_search_on_missing_index_builds_it_once(kb_dir, embedder):
    kb = KnowledgeBase(_cfg(kb_dir))
    assert current_version(kb.config.index_dir) is None
    assert kb.search("warmup steps", k=1)[0].source == "en_guide.md"
    assert current_version(kb.config.index_dir) == "v-000001"


def test_empty_kb_and_empty_query(tmp_path, embedder):
    kb = KnowledgeBase(_cfg(tmp_path / "none"))
    rep = kb.index()
    assert rep.chunks == 0 and kb.search("anything") == [] and kb.files() == []
    assert kb.search("   ") == []


def test_langchain_retriever(indexed_kb):
    kb, _ = indexed_kb
    from langchain_core.retrievers import BaseRetriever

    retriever = kb.as_retriever(k=2)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("评测使用哪些指标")
    assert len(docs) == 2
    meta = docs[0].metadata
    assert meta["source"] == "report.pdf" and meta["page"] == 2 and "CIDEr" in docs[0].page_content
    assert meta["chunk_id"] == docs[0].id and isinstance(meta["score"], float)


def test_sample_knowledge_base_answers(tmp_path, embedder):
    """The shipped multi_agent/knowledge_base answers Chinese and English questions."""
    from multi_agent.rag.config import DEFAULT_KB_DIR

    kb = KnowledgeBase(RagConfig(kb_dir=DEFAULT_KB_DIR, index_dir=tmp_path / "idx", reranker=None))
    rep = kb.index()
    assert rep.added >= 3 and not rep.skipped
    assert kb.search("如何防止所有词元挤到同一个专家", k=1)[0].source == "moe_lora_zh.md"
    assert kb.search("which learning rate and LoRA rank should I use", k=1)[0].source == "finetune_guide.md"
    assert kb.search("知识库支持哪些文件格式", k=1)[0].source == "assistant_zh.txt"


def test_cli_index_and_query(kb_dir, embedder, capsys):
    from multi_agent.rag.__main__ import main

    args = ["--kb", str(kb_dir), "--chunk-size", "200", "--chunk-overlap", "40"]
    assert main(["index", *args]) == 0
    out = capsys.readouterr().out
    assert "skipped locked.pdf: encrypted PDF" in out and "5 added" in out
    assert main(["query", "vision encoder patch size in pixels", "--k", "2", "--no-rerank", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("#1 report.pdf p.3  score=")
    assert sum(line.startswith("#") for line in out) == 2
    assert main(["query", "  ", "--no-rerank", *args]) == 2       # not "is the knowledge base empty?"
    assert capsys.readouterr().err.strip() == "error: the question is empty"


def test_config_validation():
    from vlft.config import ConfigError

    with pytest.raises(ConfigError, match="chunk_overlap"):
        RagConfig(chunk_size=100, chunk_overlap=60)
    with pytest.raises(ConfigError, match="store"):
        RagConfig(store="chroma")
    assert RagConfig(reranker="none").reranker is None
    assert RagConfig(kb_dir=Path("x")).index_dir == Path("x/.index")


def test_settings_change_rebuilds_everything(kb_dir, embedder):
    first = KnowledgeBase(_cfg(kb_dir)).index()
    rep = KnowledgeBase(_cfg(kb_dir).replace(chunk_size=120, chunk_overlap=20)).index()
    assert rep.version != first.version and rep.embedded == rep.chunks > first.chunks
    hit = KnowledgeBase(_cfg(kb_dir).replace(chunk_size=120, chunk_overlap=20)).search("负载均衡损失", k=1)[0]
    assert len(hit.text) <= 120 and hit.source == "zh_gbk.txt"
