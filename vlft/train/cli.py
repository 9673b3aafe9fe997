"""Shared entry for lora.py / MoeLORA.py: parse flags, run, turn bad input into one line (exit 2)."""

from __future__ import annotations

from typing import Sequence


def main(config_cls, argv: Sequence[str] | None = None) -> int:
    from vlft.cli import run_stage
    from vlft.train import train

    if argv is None:  # a command: its phase breakdown includes the process start-up
        from vlft.train.phases import note_command_start
        note_command_start()
    rc, _ = run_stage(config_cls, train, argv)
    return rc


def _grow_cuda_segments() -> None:
    # Before torch touches CUDA: grow allocator segments instead of fragmenting them (varying batch
    # shapes), so reserved stays close to allocated (docs/performance.md). A user's own setting wins.
    import os
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def lora_main(argv: Sequence[str] | None = None) -> int:
    """lora.py's stage; returns the exit code."""
    _grow_cuda_segments()
    from vlft.train.config import TrainConfig
    return main(TrainConfig, argv)


def moelora_main(argv: Sequence[str] | None = None) -> int:
    """MoeLORA.py's stage; returns the exit code."""
    _grow_cuda_segments()
    from vlft.train.config import MoeTrainConfig
    return main(MoeTrainConfig, argv)


def lora_command(argv: Sequence[str] | None = None) -> None:
    """``vlft-lora`` ([project.scripts]): ``python lora.py``, ending as that script does."""
    from vlft.cli import exit_now
    exit_now(lora_main(argv))


def moelora_command(argv: Sequence[str] | None = None) -> None:
    """``vlft-moelora``: ``python MoeLORA.py``."""
    from vlft.cli import exit_now
    exit_now(moelora_main(argv))
