"""--resume_from_checkpoint auto picks the highest step, never the newest file time."""

from __future__ import annotations

import os

import pytest

from vlft.train.checkpoint import CheckpointError, latest_checkpoint, resolve_resume


def _ckpt(root, step, complete=True, mtime=None):
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if complete:
        (d / "trainer_state.json").write_text("{}")
    if mtime is not None:
        os.utime(d, (mtime, mtime))
    return d


def test_latest_is_by_step_number_not_mtime(tmp_path):
    _ckpt(tmp_path, 10, mtime=1_000)
    _ckpt(tmp_path, 9, mtime=9_000)        # newer on disk, older in training
    _ckpt(tmp_path, 100, mtime=500)        # "100" sorts before "9" as a string
    (tmp_path / "checkpoint-x").mkdir()    # not a checkpoint
    assert latest_checkpoint(tmp_path).name == "checkpoint-100"


def test_incomplete_checkpoint_is_ignored(tmp_path):
    _ckpt(tmp_path, 4)
    _ckpt(tmp_path, 6, complete=False)     # killed while saving
    assert resolve_resume("auto", tmp_path).endswith("checkpoint-4")


def test_auto_without_checkpoints_starts_fresh_and_bad_paths_error(tmp_path):
    assert resolve_resume("auto", tmp_path / "nothing") is None
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(CheckpointError, match="not a folder"):
        resolve_resume(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(CheckpointError, match="incomplete"):
        resolve_resume(str(_ckpt(tmp_path, 3, complete=False)), tmp_path)
