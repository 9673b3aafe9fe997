"""CLI flags (seed aliases included), YAML recipes and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlft.config import ConfigError, parse_config
from vlft.paths import REPO_DIR
from vlft.train import MoeTrainConfig, TrainConfig
from vlft.train.plan import LaunchEnv, auto_micro_batch, make_plan

SEED_ARGS = ["--model", "./qwen3-vl-4b-instruct", "--train_json", "./coco_2014_caption/train.json",
             "--output_dir", "./output/Qwen3-VL-4Bmoelora"]


def test_seed_command_line_parses_for_both_scripts():
    for cls in (TrainConfig, MoeTrainConfig):
        cfg = parse_config(cls, SEED_ARGS)
        assert cfg.model_name_or_path == "./qwen3-vl-4b-instruct"
        assert cfg.data_path == "./coco_2014_caption/train.json"
        assert cfg.output_dir == "./output/Qwen3-VL-4Bmoelora"
    assert parse_config(MoeTrainConfig, SEED_ARGS).adapter == "moelora"
    assert parse_config(TrainConfig, SEED_ARGS).adapter == "lora"


def test_recipe_flags_from_the_qwen_recipe():
    cfg = parse_config(TrainConfig, [
        "--model_name_or_path", "m", "--data_path", "d.jsonl", "--image_folder", "imgs", "--output_dir", "o",
        "--model_max_length", "2048", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "4",
        "--num_train_epochs", "3", "--lr_scheduler_type", "cosine", "--learning_rate", "2e-4",
        "--logging_steps", "10", "--save_strategy", "steps", "--save_steps", "1000", "--save_total_limit", "2",
        "--lora_target_modules", "all", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.05",
        "--bf16", "--adapter", "dora", "--load_in_4bit", "--no-gradient_checkpointing", "--max_steps", "5",
        "--warmup_ratio", "0.1", "--seed", "3", "--resume_from_checkpoint", "auto", "--eval_data_path", "v.json",
        "--max_pixels", "50176", "--min_pixels", "3136", "--report_to", "none", "--verbose"])
    assert (cfg.bf16, cfg.quant, cfg.gradient_checkpointing, cfg.adapter) == (True, "4bit", False, "dora")
    assert cfg.lora_target_modules == "all" and cfg.resume_from_checkpoint == "auto"


def test_moe_flags_only_on_moelora_script(capsys):
    cfg = parse_config(MoeTrainConfig, SEED_ARGS + ["--num_experts", "8", "--top_k", "1",
                                                    "--router_aux_loss_coef", "0.05"])
    assert (cfg.moelora.num_experts, cfg.moelora.top_k, cfg.moelora.router_aux_loss_coef) == (8, 1, 0.05)
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, SEED_ARGS + ["--num_experts", "8"])


def test_method_options_are_a_section_only_moelora_carries(tmp_path):
    from vlft.train.config import MoeLoraOptions

    assert TrainConfig().moelora is None and TrainConfig().method_options is None  # LoRA: no MoE knobs
    moe = TrainConfig(adapter="moelora")
    assert moe.method_options == moe.moelora == MoeLoraOptions()  # the defaults
    flat = TrainConfig.from_dict({"adapter": "moelora", "top_k": 1, "router_aux_loss_coef": 0.1})
    nested = TrainConfig.from_dict({"adapter": "moelora", "moelora": {"top_k": 1, "router_aux_loss_coef": 0.1}})
    assert flat == nested and flat.moelora == MoeLoraOptions(top_k=1, router_aux_loss_coef=0.1)
    assert TrainConfig.from_dict(flat.to_dict()) == flat  # training_summary.json's config reloads
    assert TrainConfig.from_dict({"adapter": "lora", "num_experts": 8}).moelora is None  # ignored, said so
    y = tmp_path / "m.yaml"
    y.write_text("moelora:\n  num_experts: 6\ntop_k: 3\n", encoding="utf-8")
    cfg = parse_config(MoeTrainConfig, ["--config", str(y), "--router_aux_loss_coef", "0"])
    assert cfg.moelora == MoeLoraOptions(num_experts=6, top_k=3, router_aux_loss_coef=0.0)
    with pytest.raises(SystemExit):
        parse_config(MoeTrainConfig, ["--top_k", "5"])  # more than num_experts: one line, exit 2


@pytest.mark.parametrize("recipe", sorted((REPO_DIR / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe: Path):
    cls = MoeTrainConfig if "moe" in recipe.name else TrainConfig
    cfg = cls.from_yaml(recipe)
    assert cfg.adapter in recipe.stem or (recipe.stem == "qlora" and cfg.quant == "4bit")


def test_flags_override_yaml(tmp_path):
    y = tmp_path / "r.yaml"
    y.write_text("lora_r: 4\ntrain_json: a.json\n", encoding="utf-8")
    cfg = parse_config(TrainConfig, ["--config", str(y), "--lora_r", "16"])
    assert cfg.lora_r == 16 and cfg.data_path == "a.json"


@pytest.mark.parametrize("kw,field", [(dict(lora_r=0), "lora_r"), (dict(top_k=5, num_experts=4), "top_k"),
                                      (dict(bf16=True, fp16=True), "fp16"),
                                      (dict(load_in_4bit=True, load_in_8bit=True), "load_in_8bit"),
                                      (dict(lora_dropout=1.0), "lora_dropout")])
def test_bad_values_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        TrainConfig.from_dict(kw)  # flat MoE-LoRA keys go to its section


def test_auto_fields_resolve_by_device_and_process_count(tmp_path):
    one = LaunchEnv(world_size=1, local_world_size=1, cpu_count=16)

    def plan(cfg, device, env=one, max_len=None):
        return make_plan(cfg, max_len, device=device, env=env, compile_check=(device == "cuda", ""))

    cfg = parse_config(TrainConfig, SEED_ARGS)
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.learning_rate,
            cfg.compile_mode, cfg.dataloader_num_workers) == (None,) * 5
    cuda, cpu = plan(cfg, "cuda"), plan(cfg, "cpu")
    # one CUDA process: CUDA graphs, batch 24 (32 under graphs peaks at 7.8 GiB), 4 decoding workers
    assert (cuda.compile_mode, cuda.batch_size, cuda.accumulation, cuda.workers) == ("reduce-overhead", 24, 1, 4)
    assert cuda.compile and cuda.cuda_graphs and cuda.pad_to_multiple_of == 32 and cuda.recompute_activations
    assert cuda.learning_rate == pytest.approx(1e-4 * 3 ** 0.5, rel=1e-2)
    assert cuda.precision.quant == "4bit" and cuda.checkpoint_every == 0  # the partitioner recomputes
    # CPU: the seed's 1 x 8, no workers (the cores train), eager layers with checkpointing
    assert (cpu.batch_size, cpu.accumulation, cpu.workers) == (1, 8, 0)
    assert not cpu.compile and cpu.checkpoint_every == 1 and cpu.pad_to_multiple_of == 0
    assert cpu.learning_rate == pytest.approx(1e-4)
    assert cfg.loss_impl == "fast" and cfg.checkpoint_every == 1 and cfg.gradient_checkpointing
    compiled = cfg.replace(compile_mode="default")  # compiled layers without graphs: batch 32
    assert plan(compiled, "cuda").batch_size == 32 and not plan(compiled, "cuda").cuda_graphs
    eight = LaunchEnv(world_size=8, local_world_size=8, cpu_count=16)  # 8 GPUs on one host: graphs unmeasured there, 1 worker each
    multi = plan(cfg, "cuda", eight)
    assert (multi.compile_mode, multi.batch_size, multi.workers) == ("default", 32, 1)
    assert plan(cfg.replace(dataloader_num_workers=0, compile_mode="reduce-overhead"), "cuda").workers == 0  # explicit values win
    with pytest.raises(ConfigError, match="^dataloader_num_workers:"):
        TrainConfig(dataloader_num_workers=-1)
    # long samples: fewer per micro-batch (same tokens), accumulation keeps the effective batch
    assert (auto_micro_batch(24, None), auto_micro_batch(24, 128), auto_micro_batch(24, 129)) == (24, 24, 16)
    assert (auto_micro_batch(24, 228), auto_micro_batch(32, 256), auto_micro_batch(24, 4096)) == (12, 16, 1)
    long = plan(cfg, "cuda", max_len=228)
    assert (long.batch_size, long.accumulation) == (12, 2)
    assert long.learning_rate == cuda.learning_rate
    assert plan(cfg, "cpu", max_len=4096).batch_size == 1
    assert plan(cfg.replace(per_device_train_batch_size=24), "cuda", max_len=4096).batch_size == 24
    # explicit values win; "auto" works on the command line and in YAML
    cfg = parse_config(TrainConfig, SEED_ARGS + ["--per_device_train_batch_size", "4", "--learning_rate", "auto"])
    r = make_plan(cfg, device="cuda", env=LaunchEnv(), compile_check=(True, ""))
    assert (r.batch_size, r.accumulation) == (4, 1)
    assert r.learning_rate == pytest.approx(1e-4 * (4 / 8) ** 0.5, rel=1e-2)
    y = tmp_path / "r.yaml"
    y.write_text("per_device_train_batch_size: auto\ngradient_accumulation_steps: 2\nloss_impl: hf\n",
                 encoding="utf-8")
    cfg = parse_config(TrainConfig, ["--config", str(y)])
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.loss_impl) == (None, 2, "hf")
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, SEED_ARGS + ["--per_device_train_batch_size", "0"])
