"""Find the checkpoint to resume from: ``auto`` = highest step number, complete ones only."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from vlft.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Written last by Trainer._save_checkpoint: a folder without it was cut off mid-save.
COMPLETE_MARKER = "trainer_state.json"


class CheckpointError(UserError, ValueError):
    """The requested checkpoint does not exist or is incomplete."""


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) for every complete ``checkpoint-N`` folder, sorted by step (not mtime)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir():
            if (p / COMPLETE_MARKER).is_file():
                found.append((int(m.group(1)), p))
            else:
                log.warning("%s: incomplete checkpoint (no %s), ignored", p, COMPLETE_MARKER)
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1][1] if ckpts else None


def resolve_resume(value: str | None, output_dir: str | Path) -> str | None:
    """``None`` -> fresh run; ``auto`` -> latest complete checkpoint (or fresh); a path -> checked."""
    if not value or value.lower() in ("false", "no", "none"):
        return None
    if value.lower() in ("auto", "true", "latest"):
        ckpt = latest_checkpoint(output_dir)
        if ckpt is None:
            log.info("resume_from_checkpoint=auto: no checkpoint in %s, starting from step 0", output_dir)
            return None
        log.info("Resuming from %s", ckpt)
        return str(ckpt)
    p = Path(value)
    if not p.is_dir():
        raise CheckpointError(f"resume_from_checkpoint: {p} is not a folder")
    if not (p / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"resume_from_checkpoint: {p} has no {COMPLETE_MARKER} (incomplete checkpoint)")
    return str(p)
