"""`python -m multi_agent.rag watch`: the folder is re-indexed after files are added, changed or
removed (a real watcher thread over a real index), and the command runs and stops on Ctrl+C."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from multi_agent.rag import KnowledgeBase, RagConfig
from vlft.paths import REPO_DIR


def test_watch_reindexes_added_changed_and_removed_files(tmp_path, tiny_embedder):
    from multi_agent.rag.watch import watch

    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    (kb_dir / "a.md").write_text("Axolotls regrow limbs.\n", encoding="utf-8")
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, embedder=tiny_embedder))
    reports: queue.Queue = queue.Queue()
    stop = threading.Event()
    t = threading.Thread(target=watch, args=(kb,), kwargs=dict(interval=0.1, settle=0.2, stop=stop,
                                                              on_report=reports.put))
    t.start()
    try:
        first = reports.get(timeout=60)
        assert first.added == 1
        (kb_dir / "b.md").write_text("Beavers build dams.\n", encoding="utf-8")
        assert reports.get(timeout=60).added == 1
        time.sleep(0.05)
        (kb_dir / "a.md").write_text("Axolotls regrow limbs and hearts.\n", encoding="utf-8")
        assert reports.get(timeout=60).changed == 1
        (kb_dir / "b.md").unlink()
        assert reports.get(timeout=60).deleted == 1
        assert reports.empty()                               # nothing changed: no runs
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive() and {f["path"] for f in kb.files()} == {"a.md"}


@pytest.mark.slow
def test_watch_command_starts_indexes_and_stops_on_ctrl_c(tmp_path, tiny_embedder):
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    (kb_dir / "a.md").write_text("Axolotls regrow limbs.\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "multi_agent.rag", "watch", "--kb", str(kb_dir), "--embedder",
                             tiny_embedder, "--reranker", "none", "--interval", "0.2"], cwd=str(REPO_DIR),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_DIR), "PYTHONFAULTHANDLER": "1"})
    try:
        assert proc.stdout.readline().startswith("watching")
        assert "1 added" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:   # where it hangs: faulthandler prints every thread's stack
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"watch did not stop on Ctrl+C within 60 s; its stacks:\n{err[-4000:]}")
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "stopped"
    assert "Building index from tokens" not in err  # bm25s's debug line: logs are quiet by default
