"""The stage scripts as users run them: MoeLORA.py with the seed's flags + SwanLab offline, and
two-process data parallel on the CPU (gloo)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from train_helpers import TINY_PIXELS, run_script as _run

SMALL = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
         "--max_pixels", str(TINY_PIXELS), "--logging_steps", "1", "--save_strategy", "no"]


@pytest.mark.slow  # a subprocess that imports torch + transformers and trains
def test_moelora_seed_command_logs_to_swanlab_offline(tiny_model_dir, caption_json, tmp_path):
    out = tmp_path / "Qwen3-VL-4Bmoelora"
    p = _run([sys.executable, "MoeLORA.py", "--model", str(tiny_model_dir), "--train_json", str(caption_json),
              "--output_dir", str(out), *SMALL, "--num_sample_predictions", "2", "--max_new_tokens", "4"],
             tmp_path)
    assert "trainable params:" in p.stdout and "swanlab sync" in p.stdout
    assert p.stdout.count("phases: startup ") == 1  # the phase breakdown, one line at the end
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["num_experts"] == 4 and cfg["top_k"] == 2
    assert load_file(str(out / "adapter_model.safetensors"))
    runs = list((out / "swanlog").glob("run-*"))
    assert len(runs) == 1, list((out / "swanlog").iterdir())
    log = b"".join(f.read_bytes() for f in runs[0].glob("*.swanlab"))
    for key in (b"train/loss", b"train/learning_rate", b"train/grad_norm", b"samples_per_second",
                b"tokens_per_second", b"peak_cpu_rss_gb", b"moe/aux_loss", b"/entropy", b"/load_e0",
                b"predictions/table", b"predictions/images", b"phases/compile_s", b"phases/total_s"):
        assert key in log, key
    assert list((runs[0] / "media").rglob("*.png")) or list((runs[0] / "media").rglob("*.jp*g"))
    phases = json.loads((out / "training_summary.json").read_text())["phases"]
    # a command counts its interpreter start; its first torch import is part of loading
    assert 0 < phases["startup"] < phases["load"]
    preds = [json.loads(l) for l in (out / "sample_predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(Path(r["image"]).is_file() for r in preds)


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu(tiny_model_dir, caption_json, tmp_path):
    out = tmp_path / "ddp"
    p = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "lora.py", "--model", str(tiny_model_dir), "--train_json", str(caption_json),
              "--output_dir", str(out), *SMALL, "--per_device_train_batch_size", "1", "--report_to", "none",
              "--num_sample_predictions", "0"], tmp_path)
    assert p.stdout.count("trainable params:") == 2  # both ranks set up
    s = json.loads((out / "training_summary.json").read_text())
    # each step consumed 2 samples (1 per rank); the adapters were identical on both ranks at the end
    assert s["world_size"] == 2 and s["global_step"] == 2 and s["epochs"] == 1.0
    assert s["ranks_consistent"] is True


def test_bad_input_of_any_kind_is_one_line_and_exit_2(tiny_model_dir, caption_json, tmp_path, capsys, monkeypatch):
    """Every vlft.errors.UserError (here a CheckpointError) ends the stage with one 'error:' line and exit
    code 2 (vlft.errors.BAD_INPUT), before the model weights load."""
    import lora
    from vlft.errors import BAD_INPUT
    from vlft.models import loading

    loads = []
    monkeypatch.setattr(loading, "load_model", lambda *a, **kw: loads.append(a))
    rc = lora.main(["--model", str(tiny_model_dir), "--train_json", str(caption_json), "--output_dir",
                    str(tmp_path / "o"), "--resume_from_checkpoint", str(tmp_path / "nope"), "--report_to", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == BAD_INPUT == 2 and len(err) == 1 and err[0].startswith("error: resume_from_checkpoint:")
    assert loads == []


def test_installed_entry_points_run_the_same_mains():
    """[project.scripts] vlft-lora / vlft-moelora call the functions the seed scripts call."""
    import tomllib

    from vlft.paths import REPO_DIR
    from vlft.train import cli

    scripts = tomllib.loads((REPO_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["vlft-lora"] == "vlft.train.cli:lora_command" and scripts["vlft-moelora"] == "vlft.train.cli:moelora_command"
    for fn in (cli.lora_main, cli.moelora_main):
        with pytest.raises(SystemExit) as e:
            fn(["--help"])
        assert e.value.code == 0
