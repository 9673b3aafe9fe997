"""Where a training run's wall time goes: one phase breakdown per run.

``PhaseClock`` times the recipe's parts (loading, data, the training loop, saving, predictions); the
training loop is split further from the Trainer's per-step times (``split_warmup``): the first steps
and steps with a new batch shape take longer than the steady step (torch.compile, CUDA-graph capture,
data-loading workers starting), and that excess is reported as ``compile``. Evaluation passes and
checkpoints inside the loop are timed by ``VlftTrainer`` and reported as ``eval`` and ``save``.

The breakdown is printed as one line at the end of a run, stored in training_summary.json
(``"phases"``, seconds) and logged to SwanLab.
"""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import contextmanager
from typing import Iterator

# the order of the printed line; "startup" is what a command spent before the recipe (interpreter, imports,
# flags), "other" the rest of the wall time (SwanLab, the Trainer's own set-up, ...)
PHASES = ("startup", "load", "data", "compile", "train", "eval", "save", "predict", "other")
# a step counts as warm-up when it takes this many times the median step (noise stays below it)
WARMUP_FACTOR = 1.5


def split_warmup(step_seconds: list[float]) -> tuple[float, float]:
    """(warm-up seconds, steady seconds) of a training loop's per-step times: the warm-up is what the
    steps slower than WARMUP_FACTOR x the median step took beyond the median (compilation, CUDA-graph
    capture, workers starting); the rest is steady stepping."""
    if not step_seconds:
        return 0.0, 0.0
    median = statistics.median(step_seconds)
    warm = sum(d - median for d in step_seconds if d > WARMUP_FACTOR * median)
    return warm, sum(step_seconds) - warm


def compiler_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process (forward and backward graphs; 0 when
    nothing was compiled). A short run's every step may compile, which the median split cannot see."""
    if "torch._dynamo" not in sys.modules:  # nothing compiled (and no reason to import the compiler)
        return 0.0
    try:
        from torch._dynamo.utils import calculate_time_spent
        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except Exception:  # a private API: a torch without it only loses this floor  # noqa: BLE001
        return 0.0


_command_start: float | None = None  # perf_counter() value of the process start, set by note_command_start()


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), None where that cannot be read."""
    import os
    try:
        with open("/proc/self/stat", "rb") as f:
            # field 22, after the parenthesised command name (which may hold spaces): start time in clock ticks
            started = int(f.read().rsplit(b")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime", "rb") as f:
            return max(float(f.read().split()[0]) - started, 0.0)
    except (OSError, ValueError, IndexError):
        return None


def note_command_start() -> None:
    """Called by a stage run as a command (not from Python): the next PhaseClock counts the time since
    the process started as its "startup" phase."""
    global _command_start
    age = process_age()
    _command_start = None if age is None else time.perf_counter() - age


class PhaseClock:
    """Seconds per phase of one run, from construction on (from the process start for a command)."""

    def __init__(self):
        global _command_start
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        if _command_start is not None:  # one command, one run: only the first clock counts it
            self.seconds["startup"] = self.start - _command_start
            self.start, _command_start = _command_start, None

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(float(seconds), 0.0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add_training_loop(self, loop_s: float, step_seconds: list[float], eval_s: float, save_s: float,
                          compiled_s: float = 0.0) -> None:
        """Split the Trainer loop's wall time into compile (warm-up), train, eval and save;
        ``compiled_s``: what torch.compile itself measured (a floor for the warm-up)."""
        warm = max(split_warmup(step_seconds)[0], compiled_s)
        warm = min(warm, max(loop_s - eval_s - save_s, 0.0))
        self.add("compile", warm)
        self.add("eval", eval_s)
        self.add("save", save_s)
        self.add("train", loop_s - eval_s - save_s - warm)

    def as_dict(self) -> dict[str, float]:
        """Every phase in seconds (0 for those that did not run), plus ``other`` and ``total``."""
        total = time.perf_counter() - self.start
        d = {name: round(self.seconds.get(name, 0.0), 2) for name in PHASES if name != "other"}
        d["other"] = round(max(total - sum(self.seconds.values()), 0.0), 2)
        d["total"] = round(total, 2)
        return d

    def line(self) -> str:
        d = self.as_dict()
        return "phases: " + ", ".join(f"{k} {d[k]:.1f} s" for k in PHASES) + f"; total {d['total']:.1f} s"
