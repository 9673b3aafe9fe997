"""A crash at any point of an indexing run leaves the previous index loadable and correct."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rag_files import EN_GUIDE

import multi_agent.rag.index as index_mod
from multi_agent.rag import KnowledgeBase, RagConfig
from multi_agent.rag.index import current_version
from vlft.paths import REPO_DIR

STAGES = ["vectors-added", "chunks-written", "store-saved", "version-renamed", "committed"]
NEW_FACT = "Evaluation uses beam search with four beams."


def _cfg(kb_dir: Path, **kw) -> RagConfig:
    return RagConfig(kb_dir=kb_dir, reranker=None, chunk_size=200, chunk_overlap=40, **kw)


def _edit(kb_dir: Path) -> None:
    (kb_dir / "en_guide.md").write_text(EN_GUIDE + f"\n{NEW_FACT}\n", encoding="utf-8")
    (kb_dir / "zh_big5.txt").unlink()


def _state(kb_dir: Path) -> tuple[str, bool, set[str]]:
    """(version, new fact found, sources) as seen by a fresh process-like KnowledgeBase."""
    kb = KnowledgeBase(_cfg(kb_dir))
    hits = kb.search("how many beams does evaluation use", k=5)
    return (current_version(kb.config.index_dir), any(NEW_FACT in h.text for h in hits),
            {f["path"] for f in kb.files()})


@pytest.mark.parametrize("stage", STAGES)
def test_exception_between_writes_keeps_previous_index(kb_dir, embedder, monkeypatch, stage):
    kb = KnowledgeBase(_cfg(kb_dir))
    kb.index()
    old_sources = {f["path"] for f in kb.files()}
    _edit(kb_dir)

    def crash(at):
        if at == stage:
            raise RuntimeError(f"injected crash at {at}")

    monkeypatch.setattr(index_mod, "_checkpoint", crash)
    with pytest.raises(RuntimeError, match="injected"):
        kb.index()
    monkeypatch.setattr(index_mod, "_checkpoint", lambda at: None)

    version, found, sources = _state(kb_dir)
    if stage == "committed":  # crash after the pointer swap: the new index is complete
        assert (version, found) == ("v-000002", True) and "zh_big5.txt" not in sources
    else:
        assert (version, found, sources) == ("v-000001", False, old_sources)
    rep = KnowledgeBase(_cfg(kb_dir)).index()  # the next run finishes the job and cleans up
    assert _state(kb_dir)[1:] == (True, old_sources - {"zh_big5.txt"})
    if stage != "committed":
        assert (rep.changed, rep.deleted) == (1, 1)
    leftovers = [p.name for p in kb.config.index_dir.iterdir() if p.is_dir()]
    assert leftovers == [current_version(kb.config.index_dir)]


def test_killed_indexing_process_leaves_loadable_index(kb_dir, embedder, tmp_path):
    """SIGKILL a real indexing process while it is writing the new version."""
    KnowledgeBase(_cfg(kb_dir)).index()
    before = _state(kb_dir)
    _edit(kb_dir)
    script = tmp_path / "run_index.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import numpy as np
        import multi_agent.rag.index as ix
        from multi_agent.rag import RagConfig

        class HashEmbedder:  # stands in for the model only: this run never commits its vectors
            dim = {embedder.dim}
            def batches(self, texts, batch_size=16):
                v = np.random.default_rng(len(texts)).standard_normal((len(texts), self.dim))
                yield list(range(len(texts))), (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("float32")

        def hang(at):
            if at == "chunks-written":
                print("WRITING", flush=True)
                time.sleep(600)

        ix._checkpoint = hang
        cfg = RagConfig(kb_dir=Path({str(kb_dir)!r}), reranker=None, chunk_size=200, chunk_overlap=40)
        ix.build_index(cfg, HashEmbedder())
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=REPO_DIR, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITING", line
        tmp_dirs = [p for p in (kb_dir / ".index").iterdir() if p.name.startswith(".tmp-")]
        assert tmp_dirs and (tmp_dirs[0] / "chunks.jsonl").exists()  # killed mid-way through a version
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _state(kb_dir) == before  # previous version still loads and answers as before
    rep = KnowledgeBase(_cfg(kb_dir)).index()
    assert (rep.changed, rep.deleted) == (1, 1) and _state(kb_dir)[1]
    assert not [p for p in (kb_dir / ".index").iterdir() if p.name.startswith(".tmp-")]
