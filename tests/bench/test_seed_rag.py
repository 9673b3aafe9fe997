"""bench.seed_rag, the replica of the seed's retrieval the benchmark compares against: its fusion rule,
its encoding fallback, and one build + search through the real LangChain parts on tiny files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import seed_rag
from bench.seed_rag import SeedReplica, fuse, load_folder

pytest.importorskip("langchain_community")


def doc(text: str, source: str = "a.txt"):
    from langchain_core.documents import Document

    return Document(page_content=text, metadata={"source": source})


def first_decoding(raw: bytes, encodings) -> str:
    for enc in encodings:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes anything")


def texts(docs) -> list[str]:
    return [d.page_content for d in docs]


def test_fusion_weights_bm25_04_dense_06():
    # BM25's first (0.4) ranks between the dense list's first (0.6) and second (0.3): equal weights
    # would put BM25's first on top (0.5 ties, first seen).
    assert texts(fuse([doc("A")], [doc("X"), doc("Y")])) == ["X", "A", "Y"]
    assert (seed_rag.BM25_WEIGHT, seed_rag.DENSE_WEIGHT) == (0.4, 0.6)


def test_fusion_keeps_the_max_not_the_sum():
    # B: BM25 rank 2 (0.2) and dense rank 2 (0.3) -> max 0.3 < A's 0.4; a sum (0.5) would put B second.
    assert texts(fuse([doc("A"), doc("B")], [doc("C"), doc("B")])) == ["C", "A", "B"]


def test_fusion_keys_by_source_and_first_200_chars():
    head = "h" * 200
    # Same source, same first 200 characters: one chunk (whatever follows); BM25's object is kept.
    fused = fuse([doc(head + " bm25 tail")], [doc(head + " dense tail")])
    assert texts(fused) == [head + " bm25 tail"]
    # Same text in two files: two chunks.
    assert len(fuse([doc("same", "a.txt")], [doc("same", "b.txt")])) == 2
    # Differs within the first 200 characters: two chunks.
    assert len(fuse([doc("x" + head)], [doc("y" + head)])) == 2


def test_loader_skips_non_utf8_text_with_the_installed_textloader(tmp_path):
    """The installed TextLoader wraps UnicodeDecodeError in RuntimeError, which the seed's encoding
    loop does not catch: a GBK / Big5 / UTF-16 file fails at utf-8 and is skipped."""
    (tmp_path / "en.md").write_text("plain English\n", encoding="utf-8")
    (tmp_path / "gbk.txt").write_bytes("中文知识库说明".encode("gbk"))
    (tmp_path / "big5.txt").write_bytes("繁體中文說明".encode("big5"))
    (tmp_path / "u16.txt").write_text("宽字符文本", encoding="utf-16")
    (tmp_path / "notes.rst").write_text("not a suffix the seed read", encoding="utf-8")
    docs, failed = load_folder(tmp_path)
    assert texts(docs) == ["plain English\n"]
    assert sorted(Path(p).name for p, _ in failed) == ["big5.txt", "gbk.txt", "u16.txt"]
    assert all(e.startswith("RuntimeError") for _, e in failed)


def test_loader_encoding_order_when_decode_errors_come_through(tmp_path):
    """With decode errors unwrapped (an older TextLoader): utf-8, utf-16, gbk, ... in that order, on
    UnicodeDecodeError only. Python's utf-16 stream decoder never returns text for a file without a
    BOM: invalid UTF-16 -> UnicodeDecodeError (gbk is tried next and reads GBK right; Big5 comes
    out as mojibake of gbk, gb2312 or latin-1); valid UTF-16 -> UnicodeError "does not start with
    BOM", which is not caught: skipped."""
    (tmp_path / "u16bytes_gbk.txt").write_bytes("中文".encode("gbk"))   # 4 bytes, valid UTF-16 LE, no BOM
    (tmp_path / "gbk.txt").write_bytes("中文说明书".encode("gbk") + b"!")  # odd length: invalid UTF-16
    big5 = "繁體中文說明，請按下鍵盤。"
    (tmp_path / "big5.txt").write_bytes(big5.encode("big5") + b"!")
    (tmp_path / "u16.txt").write_text("宽字符", encoding="utf-16")     # with a BOM
    docs, failed = load_folder(tmp_path, wrapped_decode_errors="unwrap")
    got = {Path(d.metadata["source"]).name: d.page_content for d in docs}
    assert [Path(p).name for p, _ in failed] == ["u16bytes_gbk.txt"]
    assert got["gbk.txt"] == "中文说明书!"
    assert got["u16.txt"] == "宽字符"
    raw = big5.encode("big5") + b"!"
    assert got["big5.txt"] == first_decoding(raw, ("gbk", "gb2312", "latin-1")) != big5 + "!"


def test_build_and_search_on_tiny_files(tmp_path):
    """Loader -> 600/80 splitter -> FAISS + BM25 -> fusion, through the real LangChain parts with a
    tiny random embedder; BM25 (whitespace tokens) finds the English file, a PDF is read per page,
    a GB2312 file fails."""
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from reportlab.pdfgen import canvas

    from multi_agent.rag.testing import build_tiny_embedder

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "lora.md").write_text("LoRA adds low rank adapters to frozen weights.\n\n" + "filler words " * 100,
                                encoding="utf-8")
    (kb / "zh.txt").write_bytes("混合专家路由器".encode("gb2312"))
    c = canvas.Canvas(str(kb / "doc.pdf"))
    for page in ("First page about tokenizers.", "Second page about checkpoints."):
        c.drawString(72, 720, page)
        c.showPage()
    c.save()
    emb = HuggingFaceEmbeddings(model_name=str(build_tiny_embedder(tmp_path / "tiny")),
                                model_kwargs={"device": "cpu"})
    seed = SeedReplica(emb).build(kb)
    assert [Path(p).name for p, _ in seed.failed] == ["zh.txt"]
    assert len(seed.docs) == 3  # lora.md + two PDF pages
    assert len(seed.chunks) >= 3 and all(len(c.page_content) <= seed_rag.CHUNK_SIZE for c in seed.chunks)
    hits = seed.search("low rank adapters frozen", k=3)
    assert len(hits) == 3
    assert seed.bm25.invoke("low rank adapters frozen")[0].metadata["source"].endswith("lora.md")
    assert any(h.metadata["source"].endswith("lora.md") for h in hits)
    # Rerank: a cross-encoder over every fused chunk, best first, then the first k.
    from sentence_transformers import CrossEncoder

    from multi_agent.rag.embed import resolve_model_path
    from multi_agent.rag.testing import build_tiny_cross_encoder

    seed.reranker = CrossEncoder(str(build_tiny_cross_encoder(tmp_path / "ce", resolve_model_path("default"))))
    q = "checkpoints and tokenizers"
    fused = fuse(seed.bm25.invoke(q), seed.dense.invoke(q))
    scores = seed.reranker.predict([(q, d.page_content) for d in fused])
    want = [d.page_content for _, d in sorted(zip(scores, fused), key=lambda t: -t[0])][:2]
    assert texts(seed.search(q, k=2)) == want
    assert texts(seed.search(q, k=2, rerank=False)) == texts(fused[:2])


def test_files_corpus_and_read_check(tmp_path):
    """The benchmark's real-files corpus: every question's key phrase survives the re-encoding, and
    the replica's loader (installed TextLoader) reads exactly the UTF-8 files and the PDFs."""
    from bench.rag_files import FILES, build_corpus, read_files

    questions, notes = build_corpus(tmp_path)
    if len(notes) < len(FILES):
        pytest.skip("some system files of the corpus (licences, man pages, PDFs) are not installed here")
    assert {n["encoding"] for n in notes.values()} >= {"gbk", "gb2312", "big5", "pdf", "utf-8"}
    assert all(n.get("chars_dropped", 0) == 0 for n in notes.values())
    docs, failed = load_folder(tmp_path)
    loaded: dict[str, str] = {}
    for d in docs:
        rel = Path(d.metadata["source"]).relative_to(tmp_path).as_posix()
        loaded[rel] = loaded.get(rel, "") + d.page_content
    read = read_files(loaded, questions)
    non_utf8 = sorted(rel for rel, n in notes.items() if n["encoding"] not in ("utf-8", "pdf"))
    assert sorted(read["unreadable"]) == non_utf8 == sorted(Path(p).relative_to(tmp_path).as_posix()
                                                            for p, _ in failed)
    # The check accepts a file whose text holds all its key phrases, and only that.
    keys: dict[str, str] = {}
    for q in questions:
        keys[q.file] = keys.get(q.file, "") + " " + q.key
    assert read_files(keys, questions)["unreadable"] == []
    two = next(q.file for q in questions if sum(x.file == q.file for x in questions) == 2)
    assert read_files({**keys, two: next(q.key for q in questions if q.file == two)}, questions)["unreadable"] == [two]
