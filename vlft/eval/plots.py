"""Loss curves of trained adapters, drawn from the history each training run saves.

``lora.py`` / ``MoeLORA.py`` write ``training_summary.json`` into the adapter folder with the
Trainer's ``log_history`` (a training ``loss`` at every logging step, an ``eval_loss`` at every
evaluation). :func:`plot_loss_curves` draws both for each adapter into one PNG; ``evaluate.py``
puts it next to its report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Written by vlft.train next to the adapter weights (kept as a literal: reading it needs no training code).
SUMMARY_FILE = "training_summary.json"
PLOT_FILE = "loss_curves.png"


@dataclass
class LossHistory:
    """One run's losses by optimizer step."""
    train: list[tuple[int, float]] = field(default_factory=list)
    eval: list[tuple[int, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.train or self.eval)


def history_from_log(log_history: list[dict]) -> LossHistory:
    """Training and evaluation losses from a Trainer ``log_history`` (entries without a step or with a
    non-finite loss are left out)."""
    h = LossHistory()
    for entry in log_history or []:
        step = entry.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, series in (("loss", h.train), ("eval_loss", h.eval)):
            v = entry.get(key)
            if isinstance(v, (int, float)) and v == v and abs(v) != float("inf"):
                series.append((int(step), float(v)))
    return h


def read_history(adapter_dir: str | Path) -> LossHistory:
    """The adapter's logged losses; empty when it has no (readable) ``training_summary.json``."""
    path = Path(adapter_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return LossHistory()
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); no loss curve for it", path, e)
        return LossHistory()
    return history_from_log(summary.get("log_history") if isinstance(summary, dict) else None)


def plot_loss_curves(histories: dict[str, LossHistory], path: str | Path,
                     title: str = "Training and evaluation loss") -> Path | None:
    """One PNG: each run's training loss (solid) and evaluation loss (dashed, dots) in one colour.

    Returns the file, or None when there is nothing to draw or matplotlib is not installed."""
    histories = {name: h for name, h in histories.items() if h}
    if not histories:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed (pip install matplotlib): no loss-curve picture")
        return None
    from vlft.utils.io import atomic_write

    fig, ax = plt.subplots(figsize=(7.0, 4.0), dpi=100)
    try:
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (name, h) in enumerate(histories.items()):
            c = colours[i % len(colours)]
            if h.train:
                ax.plot(*zip(*h.train), color=c, linewidth=1.6, label=f"{name} train")
            if h.eval:
                ax.plot(*zip(*h.eval), color=c, linestyle="--", marker="o", markersize=4,
                        label=f"{name} eval")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (caption tokens)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, loc="best", fontsize="small")
        fig.tight_layout()
        path = Path(path)
        with atomic_write(path, mode="wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return path
