"""Console output of the Trainer: a progress bar and log lines without the per-group method stats.

The run's metrics, SwanLab and the prediction table are in ``vlft.reporting`` (shared with evaluation).
"""

from __future__ import annotations


# -- console ---------------------------------------------------------------------------------------
def _short(logs: dict | None) -> dict:
    # per-group method stats (e.g. MoE-LoRA's moe/<layers>/load_e0: dozens of keys) go to the tracker only
    return {k: v for k, v in (logs or {}).items() if k.count("/") < 2}


def use_console_progress(trainer) -> None:
    """Progress bar on (transformers hides it when its log level is quiet), and console log lines
    without the per-group method stats; the tracker still gets every key."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class ConsoleProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return super().on_log(args, state, control, logs=_short(logs), **kwargs)

    class ConsolePrinter(PrinterCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return super().on_log(args, state, control, logs=_short(logs), **kwargs)

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ConsoleProgress())
    elif trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(ConsolePrinter())
