"""What a run reports, for training and evaluation alike: SwanLab setup, throughput, peak memory,
and the prediction table (SwanLab table + captioned images)."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


# -- throughput and memory -------------------------------------------------------------------
class ThroughputMeter:
    """Samples and (non-pad) tokens seen since the last ``rates()`` call, per process."""

    def __init__(self):
        self.total_samples = 0
        self.total_tokens = 0
        self._t0 = time.perf_counter()
        self._start = self._t0
        self._samples = 0
        self._tokens = 0

    def add(self, samples: int, tokens: int) -> None:
        self._samples += samples
        self._tokens += tokens
        self.total_samples += samples
        self.total_tokens += tokens

    def rates(self, world_size: int = 1) -> dict[str, float]:
        """samples/s and tokens/s over the last interval, summed over ``world_size`` equal ranks."""
        now = time.perf_counter()
        dt = max(now - self._t0, 1e-9)
        out = {"samples_per_second": world_size * self._samples / dt,
               "tokens_per_second": world_size * self._tokens / dt}
        self._t0, self._samples, self._tokens = now, 0, 0
        return out

    def overall(self, world_size: int = 1) -> dict[str, float]:
        dt = max(time.perf_counter() - self._start, 1e-9)
        return {"samples_per_second": world_size * self.total_samples / dt,
                "tokens_per_second": world_size * self.total_tokens / dt}


def memory_metrics() -> dict[str, float]:
    """Peak GPU memory (GiB) on CUDA, else the process' peak resident memory (GiB)."""
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info()
        # what the card holds beyond PyTorch's cache: CUDA context, cuBLAS/cuDNN workspaces (~0.5-1 GiB);
        # peak reserved + this is what must fit the card
        outside = ((total - free) - torch.cuda.memory_reserved()) / 2**30
        return {"peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30,
                "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30,
                "gpu_context_gb": outside}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    scale = 2**30 if sys.platform == "darwin" else 2**20
    return {"peak_cpu_rss_gb": rss_kb / scale}


# -- SwanLab --------------------------------------------------------------------------------------
def _swanlab_logged_in() -> bool:
    try:
        import swanlab
        return bool(swanlab.Settings().api_key)
    except Exception:  # noqa: BLE001 - any settings problem means "not usable online"
        return False


def swanlab_mode(requested: str | None) -> str:
    """--swanlab_mode, else $SWANLAB_MODE, else online with a login and offline without."""
    mode = requested or os.environ.get("SWANLAB_MODE")
    if mode in ("cloud", None, ""):
        mode = "online" if _swanlab_logged_in() else "offline"
    if mode == "online" and not _swanlab_logged_in():
        log.warning("SwanLab: no login (swanlab login / SWANLAB_API_KEY): logging offline instead")
        mode = "offline"
    return mode


def init_swanlab(project: str, run_name: str, output_dir: str | Path, mode: str | None,
                 config: dict[str, Any]) -> Path | None:
    """Start the SwanLab run (before the Trainer, whose callback then reuses it).

    Returns the run folder for local/offline modes (``<output_dir>/swanlog/run-*``).
    """
    import swanlab

    mode = swanlab_mode(mode)
    log_dir = Path(output_dir) / "swanlog"
    run = swanlab.init(project=project, name=run_name, mode=mode, log_dir=str(log_dir), config=config,
                       resume="allow" if mode == "online" else None)
    run_dir = Path(run.dir) if getattr(run, "dir", None) else None
    if mode == "offline":
        print(f"SwanLab (offline, no login): run logged to {run_dir or log_dir}\n"
              f"  view it: `swanlab login` then `swanlab sync {run_dir or log_dir}` (uploads to swanlab.cn);\n"
              f"  or a local dashboard: --swanlab_mode local, `pip install 'swanlab[dashboard]'`, "
              f"`swanlab watch {log_dir}`")
    elif mode == "local":
        print(f"SwanLab (local): `swanlab watch {log_dir}` opens the dashboard")
    return run_dir


def finish_swanlab() -> None:
    import swanlab
    if swanlab.has_run():
        swanlab.finish()


def log_scalars(values: dict[str, float], step: int | None = None) -> None:
    """Numbers to the running SwanLab run (nothing when none runs)."""
    import swanlab
    if swanlab.has_run():
        swanlab.log(values, step=step)


# -- prediction table ------------------------------------------------------------------------------
def log_prediction_table(rows: list[dict], step: int | None = None) -> None:
    """A SwanLab table (id, reference, prediction) plus the images captioned with predictions."""
    import swanlab
    if not rows or not swanlab.has_run():
        return
    table = swanlab.echarts.Table().add(
        ["id", "reference", "prediction"], [[r["id"], r["reference"], r["prediction"]] for r in rows])
    images = [swanlab.Image(r["image"], caption=f"{r['id']}: {r['prediction'][:200]}")
              for r in rows if r["image"] is not None]
    payload: dict[str, Any] = {"predictions/table": table}
    if images:
        payload["predictions/images"] = images
    swanlab.log(payload, step=step)
