"""Shared entry for lora.py / MoeLORA.py: parse flags, run, turn known errors into one line."""

from __future__ import annotations

from typing import Sequence


def main(config_cls, argv: Sequence[str] | None = None) -> int:
    from vlft.adapters.registry import AdapterError
    from vlft.cli import run_stage
    from vlft.data.dataset import DataError
    from vlft.models.loading import ModelLoadError
    from vlft.train import train
    from vlft.train.checkpoint import CheckpointError

    rc, _ = run_stage(config_cls, train, argv, errors=(AdapterError, DataError, ModelLoadError, CheckpointError),
                      error_rc=2)
    return rc
