"""Shared entry for lora.py / MoeLORA.py: parse flags, run, turn known errors into one line."""

from __future__ import annotations

import sys
from typing import Sequence


def main(config_cls, argv: Sequence[str] | None = None) -> int:
    from vlft.adapters.registry import AdapterError
    from vlft.config import parse_config
    from vlft.data.dataset import DataError
    from vlft.models.loading import ModelLoadError
    from vlft.train import train
    from vlft.train.checkpoint import CheckpointError
    from vlft.utils.logging import setup_logging

    cfg = parse_config(config_cls, argv)
    setup_logging(cfg.verbose)
    try:
        train(cfg)
    except (AdapterError, DataError, ModelLoadError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
