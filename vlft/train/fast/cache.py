"""torch.compile's on-disk caches in one folder, reused across runs and processes.

Compiling the decoder layers costs tens of seconds per batch shape on a GPU host; the compiled
artifacts (inductor's FX-graph cache, the AOT-autograd cache, triton's kernels) can be loaded
instead by a later process. They live in one folder, by default ``~/.cache/vlft/compile``
(``$XDG_CACHE_HOME/vlft/compile`` when that is set), overridable with ``$VLFT_COMPILE_CACHE`` or
``--compile_cache_dir``; deleting the folder clears them (the next run compiles from scratch).
``use_compile_cache`` is the one place that points PyTorch at it, called before the first compile.
The folder also keeps the compile cost measured by earlier runs (``COSTS_FILE``), which the run
plan uses to decide whether compiling pays for itself (vlft.train.plan).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV_VAR = "VLFT_COMPILE_CACHE"
COSTS_FILE = "compile_costs.json"  # {key: seconds} measured by earlier runs (vlft.train.phases' "compile")


def default_compile_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """$VLFT_COMPILE_CACHE, else $XDG_CACHE_HOME/vlft/compile, else ~/.cache/vlft/compile."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "vlft" / "compile"


def use_compile_cache(folder: str | Path) -> Path:
    """Point inductor (FX graphs, AOT-autograd graphs) and triton (kernels) at subfolders of
    ``folder``, with the persistent caches on; returns the folder. Must run before the first
    compile of the process (inductor and triton read the variables when they first compile)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
    inductor_config.fx_graph_cache = True           # compiled graphs, keyed by graph + inputs + versions
    functorch_config.enable_autograd_cache = True   # the joint forward/backward graphs of training
    return folder


def read_compile_cost(folder: str | Path, key: str) -> float | None:
    """Seconds the compile warm-up took in the last run with ``key`` (None: never measured)."""
    try:
        costs = json.loads((Path(folder).expanduser() / COSTS_FILE).read_text(encoding="utf-8"))
        value = costs.get(key)
        return float(value) if isinstance(value, (int, float)) and value >= 0 else None
    except (OSError, ValueError, AttributeError):  # no file yet, or a damaged one: estimate instead
        return None


def record_compile_cost(folder: str | Path, key: str, seconds: float) -> None:
    """Store the compile warm-up a run measured (atomic write; a failure only loses the hint)."""
    from vlft.utils.io import write_json
    path = Path(folder).expanduser() / COSTS_FILE
    try:
        costs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not isinstance(costs, dict):
            costs = {}
    except (OSError, ValueError):
        costs = {}
    costs[key] = round(float(seconds), 2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, costs)
    except OSError:
        pass
