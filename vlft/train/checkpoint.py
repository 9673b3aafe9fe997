"""Find the checkpoint to resume from: ``auto`` = highest step number, complete ones only."""

from __future__ import annotations

import json
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


INCOMPLETE_PREFIX = "incomplete-"


def checkpoint_problem(folder: Path) -> str | None:
    """None for a complete checkpoint, else why not (no or unreadable trainer_state.json)."""
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return f"no {COMPLETE_MARKER}"
    try:
        json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{COMPLETE_MARKER} is unreadable ({e.__class__.__name__}: half-written?)"
    return None


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) for every complete ``checkpoint-N`` folder, sorted by step (not mtime).

    Incomplete ones are renamed ``incomplete-checkpoint-N``: the Trainer's rotation globs
    ``checkpoint-*`` and, keeping the highest step, would delete the complete checkpoints and keep
    the broken one (or the one it has just written)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir():
            problem = checkpoint_problem(p)
            if problem is None:
                found.append((int(m.group(1)), p))
            else:
                aside = _set_aside(p)
                log.warning("%s: incomplete checkpoint (%s), ignored%s", p, problem,
                            f" and renamed {aside.name}" if aside != p else "")
    return sorted(found)


def _set_aside(p: Path) -> Path:
    dest = p.with_name(INCOMPLETE_PREFIX + p.name)
    n = 1
    while dest.exists():
        dest, n = p.with_name(f"{INCOMPLETE_PREFIX}{n}-{p.name}"), n + 1
    try:
        p.rename(dest)
    except OSError:      # read-only output: leave it, still ignored here
        return p
    return dest


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1][1] if ckpts else None


def resolve_resume(value: str | None, output_dir: str | Path) -> str | None:
    """``None`` -> fresh run; ``auto`` -> latest complete checkpoint (or fresh); a path -> checked."""
    if not value or value.lower() in ("false", "no", "none"):
        list_checkpoints(output_dir)  # sets broken checkpoints aside before the Trainer's rotation sees them
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
    problem = checkpoint_problem(p)
    if problem is not None:
        raise CheckpointError(f"resume_from_checkpoint: {p}: incomplete checkpoint ({problem})")
    list_checkpoints(output_dir)
    return str(p)
