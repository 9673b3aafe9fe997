"""The phase breakdown of a run: the split of the training loop, and the breakdown of a real lora.py
run on the tiny model (printed once, stored in training_summary.json)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from vlft.train import phases
from vlft.train.phases import PHASES, PhaseClock, split_warmup


def test_slow_first_steps_count_as_warmup_beyond_the_median_step():
    # a compiling first step, a recompiling odd shape, the rest steady with noise
    steps = [26.5, 3.9, 1.0, 1.1, 0.9, 1.0, 13.0, 1.05]
    warm, steady = split_warmup(steps)
    median = statistics.median(steps)
    assert warm == pytest.approx((26.5 - median) + (3.9 - median) + (13.0 - median))
    assert warm + steady == pytest.approx(sum(steps))
    assert split_warmup([]) == (0.0, 0.0)
    assert split_warmup([1.0, 1.2, 0.9])[0] == 0.0  # noise is no warm-up


def test_clock_splits_the_loop_and_accounts_for_the_whole_wall_time():
    clock = PhaseClock()
    with clock.phase("load"):
        time.sleep(0.01)
    clock.add_training_loop(loop_s=20.0, step_seconds=[10.0, 2.0, 2.0, 2.0], eval_s=3.0, save_s=1.0)
    d = clock.as_dict()
    assert list(d) == [*PHASES, "total"]
    assert (d["compile"], d["train"], d["eval"], d["save"]) == (8.0, 8.0, 3.0, 1.0)
    assert d["load"] >= 0.01 and d["predict"] == 0.0
    # every step of a short run compiled: the compiler's own time is the floor
    c2 = PhaseClock()
    c2.add_training_loop(loop_s=20.0, step_seconds=[6.0, 6.0, 6.0], eval_s=0.0, save_s=0.0, compiled_s=15.0)
    assert (c2.as_dict()["compile"], c2.as_dict()["train"]) == (15.0, 5.0)
    line = clock.line()
    assert line.startswith("phases: startup 0.0 s, load ") and "compile 8.0 s" in line and line.endswith(f"total {d['total']:.1f} s")


def test_a_command_counts_its_start_up_once():
    age = phases.process_age()
    assert age is not None and age > 0  # this pytest process has been running for a while
    phases.note_command_start()
    first, second = PhaseClock(), PhaseClock()
    assert first.as_dict()["startup"] == pytest.approx(age, abs=1.0)
    assert first.as_dict()["total"] >= first.as_dict()["startup"]
    assert second.as_dict()["startup"] == 0.0  # the next run in the same process starts from its own start


def test_lora_py_prints_and_stores_the_phase_breakdown(tiny_model_dir, caption_json, tmp_path, capsys):
    """Through the real lora.py (CPU, tiny model): eval + checkpoint inside the loop, save, predictions."""
    import lora

    out = tmp_path / "out"
    rc = lora.main(["--model", str(tiny_model_dir), "--train_json", str(caption_json), "--eval_data_path",
                    str(caption_json), "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size",
                    "2", "--gradient_accumulation_steps", "1", "--max_pixels", str(64 * 64), "--save_steps", "2",
                    "--logging_steps", "1", "--report_to", "none", "--num_sample_predictions", "1",
                    "--max_new_tokens", "2"])
    assert rc == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("phases: ")]
    assert len(lines) == 1
    s = json.loads((out / "training_summary.json").read_text())
    ph = s["phases"]
    assert set(ph) == {*PHASES, "total"}
    for name in ("load", "train", "eval", "save", "predict"):
        assert ph[name] > 0, name  # every part of this run was timed
    assert ph["data"] >= 0  # 4 samples: a few milliseconds
    assert ph["startup"] == 0.0  # called from Python, not run as a command
    assert sum(v for k, v in ph.items() if k != "total") == pytest.approx(ph["total"], abs=0.05)


@pytest.mark.parametrize("config", ["TrainConfig", "MoeTrainConfig"])
def test_the_first_torch_import_falls_inside_a_phase(config):
    """The process's first torch import (seconds) counts as "load" for lora.py and MoeLORA.py alike: not
    as "startup" (MoeLORA.py's method module imported torch before the clock existed) nor as "other"
    (lora.py's run() imported it before setup()). A fresh process: no torch until the clock runs."""
    code = f"""
import sys
from vlft.train import recipe
from vlft.train.config import {config}
assert "torch" not in sys.modules
seen = {{}}
init = recipe.PhaseClock.__init__
recipe.PhaseClock.__init__ = lambda self: (seen.setdefault("clock", "torch" in sys.modules), init(self))[1]
r = recipe.FinetuneRecipe({config}())
torch_in_method = "torch" in sys.modules
def setup():
    seen["setup"] = "torch" in sys.modules and not torch_in_method
    print(seen)
    raise SystemExit(0)
r.setup = setup
r.run()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "{'clock': False, 'setup': False}"
