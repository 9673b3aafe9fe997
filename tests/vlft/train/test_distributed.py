"""The shipped accelerate configs (configs/accelerate/*.yaml), launched for real on the CPU.

No machine here has two GPUs, so each config is launched with two CPU processes (gloo) through
``accelerate launch``: only ``use_cpu``/``mixed_precision`` are changed, the distributed section
(FSDP wrapping, ZeRO stage) is the shipped one. Each run must train on both ranks, end with identical
adapters on every rank, and match a one-process run with the same effective batch.

The data is two samples of different lengths, so every optimizer step of either run sees exactly the
same pair whatever the sampler's order; the per-step losses then agree only if the loss is weighted by
labelled tokens across ranks (as in one process), not averaged per rank.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from vlft.paths import REPO_DIR

from train_helpers import CAPTIONS, TINY_PIXELS, caption_sample, run_script

CONFIG_DIR = REPO_DIR / "configs" / "accelerate"
SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
# 2 processes x batch 1 against 1 process x batch 2: the same 2 samples per optimizer step
RUN = ["--max_steps", "3", "--gradient_accumulation_steps", "1", "--max_pixels", str(TINY_PIXELS),
       "--learning_rate", "5e-3", "--warmup_ratio", "0", "--logging_steps", "1", "--save_strategy", "no",
       "--report_to", "none", "--num_sample_predictions", "0", "--seed", "0",
       "--lora_dropout", "0"]  # dropout masks would differ between the runs' RNG streams


def _run(cmd: list[str], tmp_path: Path, timeout: int = 600) -> str:
    # DeepSpeed builds its CPU communication op once: keep it across runs (HOME is a fresh folder)
    cache = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    return run_script(cmd, tmp_path, timeout, TORCH_EXTENSIONS_DIR=cache).stdout


def _cpu_variant(name: str, dst: Path) -> Path:
    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    cfg.update(use_cpu=True, mixed_precision="no", num_processes=2)
    dst.write_text(yaml.safe_dump(cfg))
    return dst


def _summary(out: Path) -> dict:
    return json.loads((out / "training_summary.json").read_text())


def _curve(out: Path) -> list[tuple[float, float]]:
    return [(h["loss"], h["grad_norm"]) for h in _summary(out)["log_history"] if "loss" in h]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_is_valid(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(CONFIG_DIR / f"{name}.yaml"))
    assert cfg.num_processes >= 2 and cfg.num_machines == 1 and not cfg.use_cpu
    assert cfg.mixed_precision == "bf16"
    if cfg.distributed_type == DistributedType.FSDP:
        import transformers
        # every layer class named for auto-wrapping must exist (a typo silently wraps nothing)
        for cls in cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
            assert hasattr(transformers, cls) or _qwen3vl_has(cls), cls
    elif cfg.distributed_type == DistributedType.DEEPSPEED:
        assert cfg.deepspeed_config["zero_stage"] in (2, 3)
        assert cfg.deepspeed_config["gradient_accumulation_steps"] == "auto"  # the Trainer's value wins
    else:
        assert cfg.distributed_type == DistributedType.MULTI_GPU


def _qwen3vl_has(cls: str) -> bool:
    from transformers.models.qwen3_vl import modeling_qwen3_vl
    return hasattr(modeling_qwen3_vl, cls)


@pytest.fixture(scope="module")
def pair_json(tmp_path_factory, coco_images) -> Path:
    p = tmp_path_factory.mktemp("pair") / "train.json"
    long = CAPTIONS[2] + " " + CAPTIONS[3]  # labelled lengths differ by about 2x
    p.write_text(json.dumps([caption_sample(0, coco_images[0], CAPTIONS[1]),
                             caption_sample(1, coco_images[1], long)]), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def single_process_run(peaked_model_dir, pair_json, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "out"
    _run([sys.executable, "lora.py", "--model", str(peaked_model_dir), "--train_json", str(pair_json),
          "--output_dir", str(out), "--per_device_train_batch_size", "2", *RUN], tmp)
    return out


@pytest.mark.slow
def test_accumulation_weights_tokens_like_one_batch(peaked_model_dir, pair_json, single_process_run, tmp_path):
    """batch 1 x 2 accumulation == batch 2: each micro-batch weighted by its labelled tokens (Qwen-VL
    models opt out of the Trainer's token counting; the fast loss opts back in)."""
    out = tmp_path / "out"
    _run([sys.executable, "lora.py", "--model", str(peaked_model_dir), "--train_json", str(pair_json),
          "--output_dir", str(out), "--per_device_train_batch_size", "1", *RUN[:2], "--gradient_accumulation_steps",
          "2", *RUN[4:]], tmp_path)
    got, want = _curve(out), _curve(single_process_run)
    assert [x for p in got for x in p] == pytest.approx([x for p in want for x in p], rel=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_launch_two_cpu_processes(name, peaked_model_dir, pair_json, single_process_run, tmp_path):
    if name.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed (the project's gpu extra)")
    out = tmp_path / "out"
    # accelerate runs a CPU "MULTI_GPU" config as one process: plain DDP goes through torchrun (gloo)
    launcher = (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if name == "ddp" else
                ["-m", "accelerate.commands.launch", "--config_file", str(_cpu_variant(name, tmp_path / "cpu.yaml"))])
    log = _run([sys.executable, *launcher, "lora.py", "--model", str(peaked_model_dir),
                "--train_json", str(pair_json), "--output_dir", str(out),
                "--per_device_train_batch_size", "1", *RUN], tmp_path)
    assert log.count("trainable params:") == 2, log[-3000:]  # both ranks set up
    multi, single = _summary(out), _summary(single_process_run)
    assert multi["world_size"] == 2 and multi["ranks_consistent"] is True
    assert multi["global_step"] == single["global_step"] == 3
    # same samples per step, same seed: the loss curve and the adapter follow the one-process run
    got, want = _curve(out), _curve(single_process_run)
    # loss and gradient norm of every step; float32, so only the reduction order differs
    assert [x for p in got for x in p] == pytest.approx([x for p in want for x in p], rel=2e-5)
    assert len({round(loss, 4) for loss, _ in want}) > 1  # the loss moves: the comparison means something
    # Adam turns tiny gradient differences (reduction order) into lr-sized steps, so adapters are only
    # compared for shape and for having trained
    a, b = load_file(out / "adapter_model.safetensors"), load_file(single_process_run / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 0  # B starts at zero


@pytest.mark.slow
def test_moelora_under_fsdp_matches_one_process_on_the_first_step(peaked_model_dir, pair_json, tmp_path):
    """MoE-LoRA (injected, not a PeftModel) shards, trains and saves under FSDP like LoRA. Its router
    load-balancing loss is computed per rank (per micro-batch, as Switch/Mixtral data parallelism does),
    so only the first step, before any update, must equal the one-process run exactly."""
    runs = {}
    for name, launcher, batch in (("single", [], "2"),
                                  ("fsdp", ["-m", "accelerate.commands.launch", "--config_file",
                                            str(_cpu_variant("fsdp", tmp_path / "cpu.yaml"))], "1")):
        out = tmp_path / name
        _run([sys.executable, *launcher, "MoeLORA.py", "--model", str(peaked_model_dir), "--train_json",
              str(pair_json), "--output_dir", str(out), "--per_device_train_batch_size", batch, *RUN], tmp_path)
        runs[name] = out
    multi = _summary(runs["fsdp"])
    assert multi["world_size"] == 2 and multi["ranks_consistent"] is True and multi["adapter"] == "moelora"
    assert _curve(runs["fsdp"])[0] == pytest.approx(_curve(runs["single"])[0], rel=2e-5)
    a = load_file(runs["fsdp"] / "adapter_model.safetensors")
    assert any("lora_expert_B" in k for k in a) and a.keys() == load_file(runs["single"] / "adapter_model.safetensors").keys()
