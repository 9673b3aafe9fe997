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


# -- does compiling pay for itself? ------------------------------------------------------------------
def _auto(cfg, n_train, **kw):
    return make_plan(cfg, 100, device="cuda", env=LaunchEnv(cpu_count=8), compile_check=(True, ""),
                     n_train=n_train, **kw)


def test_a_short_run_stays_eager_and_says_why(tmp_path):
    from vlft.train.plan import COMPILE_COST_S, COMPILE_GAIN_PER_SAMPLE_S

    cfg = TrainConfig(num_train_epochs=2, compile_cache_dir=str(tmp_path))
    # break-even: COMPILE_COST_S / COMPILE_GAIN_PER_SAMPLE_S sample-passes (batch 24 x 1 on CUDA graphs)
    even = COMPILE_COST_S / COMPILE_GAIN_PER_SAMPLE_S
    short = _auto(cfg, n_train=int(even / 2 / 4))  # a quarter of break-even over 2 epochs
    assert not short.compile and not short.cuda_graphs and short.pad_to_multiple_of == 0 and short.pad_rows_to == 0
    assert short.checkpoint_every == 1  # the eager path's memory policy
    assert short.compile_off_reason.startswith("eager: a short run") and "(estimated)" in short.compile_off_reason
    assert "eager layers" in short.line() and short.compile_off_reason in short.line()
    long = _auto(cfg, n_train=int(even))  # twice break-even over 2 epochs
    assert long.compile and long.cuda_graphs and long.pad_rows_to == long.batch_size == 24
    assert "compiling saves" in long.line() and not long.compile_off_reason


def test_explicit_compile_and_unknown_length_are_not_weighed(tmp_path):
    cfg = TrainConfig(num_train_epochs=1, compile_cache_dir=str(tmp_path))
    assert _auto(cfg.replace(compile=True), n_train=8).compile  # the user's flag wins
    assert not _auto(cfg.replace(compile=False), n_train=100000).compile
    assert _auto(cfg, n_train=None).compile and _auto(cfg, n_train=None).compile_estimate == ""
    assert _auto(cfg.replace(max_steps=2), n_train=None).compile is False  # max_steps: known length
    cpu = make_plan(cfg, 100, device="cpu", n_train=100000)  # the CPU never compiles on auto
    assert not cpu.compile and cpu.compile_off_reason == "" and cpu.pad_rows_to == 0


def test_a_measured_compile_cost_in_the_cache_folder_replaces_the_estimate(tmp_path):
    from vlft.train.fast.cache import read_compile_cost, record_compile_cost
    from vlft.train.plan import compile_cost_key

    cfg = TrainConfig(num_train_epochs=1, compile_cache_dir=str(tmp_path))
    n = 400  # 400 sample-passes: ~6 s saved, under the estimated cost
    assert not _auto(cfg, n_train=n).compile
    plan = _auto(cfg.replace(compile=True), n_train=n)
    key = compile_cost_key(cfg, plan.precision.quant, plan.compile_mode, plan.batch_size)
    record_compile_cost(tmp_path, key, 2.5)  # a warm cache: the last run compiled in 2.5 s
    assert read_compile_cost(tmp_path, key) == 2.5
    warm = _auto(cfg, n_train=n)
    assert warm.compile and "costs ~2 s (measured by an earlier run)" in warm.line()
    # another model's measurement does not count; a damaged file is only a lost hint
    assert not _auto(cfg.replace(model_name_or_path="/elsewhere"), n_train=n).compile
    (tmp_path / "compile_costs.json").write_text("{not json")
    assert read_compile_cost(tmp_path, key) is None and not _auto(cfg, n_train=n).compile
    # an injected cost wins (tests, benchmarks)
    assert _auto(cfg, n_train=n, compile_cost=0.1).compile


def test_compile_cache_folder_flag_env_default(tmp_path, monkeypatch):
    from vlft.train.fast.cache import default_compile_cache_dir

    monkeypatch.delenv("VLFT_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _auto(TrainConfig(), None).compile_cache_dir == str(tmp_path / "xdg" / "vlft" / "compile")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_compile_cache_dir() == __import__("pathlib").Path.home() / ".cache" / "vlft" / "compile"
    monkeypatch.setenv("VLFT_COMPILE_CACHE", str(tmp_path / "env"))
    assert _auto(TrainConfig(), None).compile_cache_dir == str(tmp_path / "env")
    assert _auto(TrainConfig(compile_cache_dir=str(tmp_path / "flag")), None).compile_cache_dir == str(tmp_path / "flag")
