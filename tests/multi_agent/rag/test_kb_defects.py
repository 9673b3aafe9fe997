"""Reported knowledge-base defects (issues #22 and #19), each through the real index on disk."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from multi_agent.rag import KnowledgeBase, RagConfig
from multi_agent.rag.index import current_version

FACT = "The quokka is a small marsupial that lives on Rottnest Island."


def _kb(kb_dir: Path, **kw) -> KnowledgeBase:
    return KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, **kw))


def _small_kb(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "kb"
    d.mkdir()
    for i in range(n):
        (d / f"doc{i}.md").write_text(f"Document {i}. " + FACT + f" Number {i} fact.\n", encoding="utf-8")
    return d


def test_index_belongs_to_its_knowledge_base_when_built_from_overrides(tmp_path, embedder):
    """#22.1: KnowledgeBase(kb_dir=X) used the bundled sample's index folder and overwrote it."""
    from multi_agent.rag.config import DEFAULT_KB_DIR

    kb_dir = _small_kb(tmp_path)
    kb = KnowledgeBase(kb_dir=kb_dir, reranker=None)
    assert kb.config.index_dir == kb_dir / ".index"
    assert RagConfig().replace(kb_dir=kb_dir).index_dir == kb_dir / ".index"
    explicit = RagConfig(index_dir=tmp_path / "idx").replace(kb_dir=kb_dir)
    assert explicit.index_dir == tmp_path / "idx"          # an explicit index folder stays
    sample_index = DEFAULT_KB_DIR / ".index"
    before = current_version(sample_index) if sample_index.exists() else None
    kb.index()
    assert current_version(kb_dir / ".index") == "v-000001"
    assert (current_version(sample_index) if sample_index.exists() else None) == before


def test_index_records_its_embedder_and_readers_use_it(tmp_path, embedder, tiny_embedder):
    """#22.2: an index built with --embedder X, searched without it, raised a bare FAISS
    AssertionError (and the app/MCP server, which have no embedder setting, always failed)."""
    kb_dir = _small_kb(tmp_path)
    other = tiny_embedder
    built = _kb(kb_dir, embedder=other)
    built.index()
    reader = _kb(kb_dir)                                    # no embedder given: the index's own
    assert reader.search("quokka marsupial", k=1)[0].source.startswith("doc")
    assert reader.settings().embedder == other
    rep = reader.index()                                    # a later sync keeps it (no rebuild)
    assert rep.embedded == 0 and rep.version == "v-000001"

    from multi_agent.rag.kb import IndexMismatch
    explicit = _kb(kb_dir, embedder="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(IndexMismatch, match="built with embedder .* re-index"):
        explicit.search("quokka", k=1)
    assert RagConfig(embedder="default").embedder == RagConfig(embedder="all-MiniLM-L6-v2").embedder


def test_cli_query_with_another_embedder_says_what_differs(tmp_path, embedder, tiny_embedder, capsys):
    from multi_agent.rag.__main__ import main

    kb_dir = _small_kb(tmp_path)
    other = tiny_embedder
    assert main(["index", "--kb", str(kb_dir), "--embedder", other]) == 0
    capsys.readouterr()
    assert main(["query", "quokka", "--kb", str(kb_dir)]) == 0          # uses the recorded one
    assert main(["query", "quokka", "--kb", str(kb_dir), "--embedder", "default"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "built with embedder" in err[0]


def test_index_only_given_files_leaves_the_others(tmp_path, embedder):
    """#22.5: index_documents(paths=[one file]) synced the whole folder and dropped another file."""
    kb_dir = _small_kb(tmp_path)
    kb = _kb(kb_dir)
    kb.index()
    (kb_dir / "doc0.md").unlink()                           # gone from the folder, not asked about
    (kb_dir / "new.md").write_text("Wombats produce cube-shaped droppings.\n", encoding="utf-8")
    rep = kb.index(only=["new.md"])
    assert (rep.added, rep.deleted, rep.embedded) == (1, 0, 1)
    assert {f["path"] for f in kb.files()} == {"doc0.md", "doc1.md", "doc2.md", "new.md"}
    rep = kb.index(only=["doc0.md"])                        # asked about and gone: dropped
    assert rep.deleted == 1 and "doc0.md" not in {f["path"] for f in kb.files()}


def test_symlink_out_of_the_knowledge_base_is_never_read(tmp_path, embedder):
    """#19.7: kb/link.md -> a file outside was indexed by a folder sync and served by search."""
    kb_dir = _small_kb(tmp_path)
    secret = tmp_path / "outside" / "secret.md"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:TOPSECRETPASSWORD:/root:/bin/bash\n", encoding="utf-8")
    (kb_dir / "link.md").symlink_to(secret)
    (kb_dir / "linked-dir").symlink_to(secret.parent)
    (kb_dir / "inner.md").symlink_to(kb_dir / "doc1.md")    # a link that stays inside is fine
    kb = _kb(kb_dir)
    rep = kb.index()
    reasons = dict(rep.skipped)
    assert "outside the knowledge-base folder" in reasons["link.md"]
    assert "outside the knowledge-base folder" in reasons["linked-dir/"]
    assert "inner.md" in {f["path"] for f in kb.files()}
    assert not any("TOPSECRET" in h.text for h in kb.search("root password bash", k=10))
    # add_files (the GUI's drop) and index(only=...) (MCP index_documents) refuse it too
    rep = kb.add_files([kb_dir / "link.md"])
    assert "outside the knowledge-base folder" in dict(rep.skipped)["link.md"]
    rep = kb.index(only=["link.md"])
    assert "outside" in dict(rep.skipped)["link.md"]
    assert not any("TOPSECRET" in h.text for h in kb.search("root password bash", k=10))


def test_oversized_file_is_skipped_with_a_flag_to_raise_the_limit(tmp_path, tiny_embedder):
    """#19.8: a 50 MB text file stalled indexing with no limit and no word."""
    kb_dir = _small_kb(tmp_path, n=1)
    big = kb_dir / "dump.txt"
    big.write_text(("A line of a very large log file about quokkas. " * 20 + "\n") * 300, encoding="utf-8")
    size_mb = big.stat().st_size / 2**20
    rep = _kb(kb_dir, max_file_mb=0.2, embedder=tiny_embedder).index()
    reason = dict(rep.skipped)["dump.txt"]
    assert f"{size_mb:.1f} MB is over the 0.2 MB limit" in reason and "--max-file-mb" in reason
    assert rep.embedded == 1
    rep = _kb(kb_dir, max_file_mb=5).index()               # raised: indexed (with the index's embedder)
    assert "dump.txt" not in dict(rep.skipped) and rep.added == 1 and rep.embedded > 100


def test_progress_reports_chunks_while_embedding(tmp_path, tiny_embedder):
    """#22.3/#19.8: progress sat at "8/8" through the whole embedding; now per chunk batch."""
    kb_dir = _small_kb(tmp_path, n=2)
    (kb_dir / "long.md").write_text("\n\n".join(f"Paragraph {i} about quokkas and wombats and their habits."
                                                for i in range(300)), encoding="utf-8")
    events = []
    _kb(kb_dir, batch_size=8, chunk_size=100, chunk_overlap=0, embedder=tiny_embedder).index(progress=events.append)
    embedding = [e for e in events if e.stage == "embedding"]
    assert len(embedding) > 10                             # one report per batch of 8 chunks
    assert [e.chunks_done for e in embedding] == sorted(e.chunks_done for e in embedding)
    assert events[-1].stage == "done" and events[-1].files_done == events[-1].files_total == 3
    assert 0 < embedding[len(embedding) // 2].fraction < 1


def test_cancelled_run_keeps_finished_files_and_the_next_run_resumes(tmp_path, tiny_embedder):
    """#22.3: a run stopped after 30 s kept nothing; the rerun re-embedded every chunk."""
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    for i in range(6):
        (kb_dir / f"f{i}.md").write_text("\n\n".join(f"File {i} paragraph {j} about quokkas." for j in range(20)),
                                         encoding="utf-8")
    cancel = threading.Event()

    def stop_after_three_files(p):
        if p.files_done >= 3:
            cancel.set()

    kb = _kb(kb_dir, batch_size=4, chunk_size=60, chunk_overlap=0, commit_seconds=0, embedder=tiny_embedder)
    rep = kb.index(progress=stop_after_three_files, cancel=cancel)
    assert rep.cancelled and "stopped" in rep.summary()
    done = {f["path"] for f in kb.files()}
    assert 3 <= len(done) < 6
    embedded_before = rep.embedded
    rep = kb.index()
    assert not rep.cancelled and rep.unchanged == len(done) and rep.added == 6 - len(done)
    assert rep.embedded < embedded_before * 2 and {f["path"] for f in kb.files()} == {f"f{i}.md" for i in range(6)}


def test_hidden_names_are_counted_and_odd_names_printed_escaped(tmp_path, embedder, capsys):
    """#19 (unclear): dot-files were ignored without a word; a newline in a name was printed raw;
    #22.6: images were reported as errors."""
    from multi_agent.rag.__main__ import main

    kb_dir = _small_kb(tmp_path, n=1)
    (kb_dir / ".notes.md").write_text("hidden notes\n", encoding="utf-8")
    (kb_dir / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (kb_dir / "bad\nname.txt").write_bytes(b"")
    assert main(["index", "--kb", str(kb_dir)]) == 0
    out = capsys.readouterr().out
    assert "skipped bad\\nname.txt: empty file" in out and "bad\nname" not in out
    assert "not documents, ignored: 2" in out and "photo.png" not in out
    rep = _kb(kb_dir).index()
    assert dict(rep.ignored).keys() == {".notes.md", "photo.png"}
    assert "hidden" in dict(rep.ignored)[".notes.md"]


def test_query_help_says_what_reranking_needs(capsys):
    """#22.9: `rag query --help` showed `--no-rerank ... (default: True)`."""
    from multi_agent.rag.__main__ import main

    with pytest.raises(SystemExit):
        main(["query", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: True)" not in out.split("--no-rerank", 2)[2].split("--config")[0]
    assert "none ships with the package" in out
