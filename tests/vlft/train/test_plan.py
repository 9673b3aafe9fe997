"""The run plan: every auto setting decided once, including the multi-GPU (DDP) rules, which can
only be checked here on the CPU (the launcher's environment is what the plan reads)."""

from __future__ import annotations

import json

import pytest

from vlft.train import MoeTrainConfig, TrainConfig
from vlft.train.checkpoint import CheckpointError
from vlft.train.plan import COMPILED_PAD_MULTIPLE, LaunchEnv, make_plan


def _cuda(cfg, env, max_len=None):
    return make_plan(cfg, max_len, device="cuda", env=env, compile_check=(True, ""))


def test_launch_env_reads_the_launchers_variables():
    env = LaunchEnv.from_environ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (env.world_size, env.local_world_size, env.local_rank) == (4, 2, 1)
    alone = LaunchEnv.from_environ({})
    assert (alone.world_size, alone.local_world_size, alone.local_rank) == (1, 1, None)
    assert LaunchEnv.from_environ({"WORLD_SIZE": "8"}).local_world_size == 8  # one host unless told


@pytest.mark.parametrize("world", [2, 8])
def test_several_gpus_compile_without_graphs_at_the_larger_batch(world):
    env = LaunchEnv(world_size=world, local_world_size=world, cpu_count=32)
    p = _cuda(TrainConfig(), env)
    assert p.world_size == world and p.compile and not p.cuda_graphs and p.compile_mode == "default"
    assert (p.batch_size, p.accumulation) == (32, 1) and p.effective_batch == 32 * world
    assert p.pad_to_multiple_of == COMPILED_PAD_MULTIPLE
    assert p.workers == min(4, 32 // (2 * world))  # the host's cores shared by its processes
    # an explicit mode still wins under DDP
    assert _cuda(TrainConfig(compile_mode="reduce-overhead"), env).cuda_graphs


def test_unused_parameters_follow_the_adapter_method():
    env = LaunchEnv(world_size=2, local_world_size=2, cpu_count=8)
    # MoE-LoRA: experts no token picked in a micro-batch get no gradient; DDP must be told
    assert _cuda(MoeTrainConfig(), env).ddp_find_unused_parameters
    for adapter in ("lora", "dora", "ia3"):
        assert not _cuda(TrainConfig(adapter=adapter), env).ddp_find_unused_parameters


def test_cuda_without_triton_runs_eager_with_checkpointing():
    cfg = TrainConfig()
    p = make_plan(cfg, device="cuda", env=LaunchEnv(cpu_count=8), compile_check=(False, "no triton"))
    assert not p.compile and not p.cuda_graphs and p.checkpoint_every == 1 and p.pad_to_multiple_of == 0
    assert p.compile_off_reason == "no triton"
    assert not make_plan(cfg.replace(gradient_checkpointing=False), device="cpu").checkpoint_every


def test_resume_target_is_resolved_once_in_the_plan(tmp_path):
    out = tmp_path / "out"
    cfg = TrainConfig(output_dir=str(out), resume_from_checkpoint="auto")
    assert make_plan(cfg, device="cpu").resume_from is None  # nothing to resume: step 0
    for step in (2, 10):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert make_plan(cfg, device="cpu").resume_from == str(out / "checkpoint-10")  # by step, not name
    with pytest.raises(CheckpointError):
        make_plan(cfg.replace(resume_from_checkpoint=str(tmp_path / "missing")), device="cpu")


def test_plan_prints_in_one_line_and_serialises():
    p = _cuda(TrainConfig(), LaunchEnv(cpu_count=16))
    line = p.line()
    assert "\n" not in line and line.startswith("plan: cuda x1, 4bit base")
    assert "batch 24 x 1 accumulation" in line and "compiled layers as CUDA graphs" in line
    d = json.loads(json.dumps(p.to_dict()))
    assert d["batch_size"] == 24 and d["precision"]["quant"] == "4bit" and d["effective_batch"] == 24
