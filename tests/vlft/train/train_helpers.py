"""Shared helpers for the training tests (imported by name: tests have no packages)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

# 64x64-pixel images keep every forward to a handful of image tokens.
TINY_PIXELS = 64 * 64
CAPTIONS = ["A small dog runs across the green grass.", "Two cats sleep on a red sofa.",
            "A man rides a bicycle down a busy street.", "A plate of rice and beans on a table."]


def caption_sample(i: int, image: Path, caption: str, prompt: str = "COCO Yes:") -> dict:
    return {"id": f"cap{i}", "messages": [
        {"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": caption}]}]}


def run_script(cmd: list[str], tmp_path: Path, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """Run a stage command from the repository root as a user would; fail the test on a non-zero exit.

    HOME is a fresh folder (no SwanLab login leaks in); the command gets its own process group, so a
    hung rank is killed with its launcher and never left behind."""
    import pytest

    from vlft.paths import REPO_DIR

    e = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "SWANLAB_MODE": "offline",
         "HOME": str(tmp_path / "home"), **env}
    proc = subprocess.Popen(cmd, cwd=REPO_DIR, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
