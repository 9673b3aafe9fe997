"""The training recipe: setup_model -> setup_data -> build_trainer -> fit -> save.

``train(cfg)`` is the one function the ``lora.py`` / ``MoeLORA.py`` CLIs call. Each step is
a short function so notebooks and tests can run them one by one.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlft.train.config import COMPILED_PAD_MULTIPLE, TrainConfig

log = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"
PREDICTIONS_FILE = "sample_predictions.jsonl"


# -- data ---------------------------------------------------------------------------------------
class SftDataset:
    """Normalized samples kept after filtering, with their token lengths (images included)."""

    def __init__(self, samples: list[dict], lengths: list[int]):
        self.samples, self.lengths = samples, lengths

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


@dataclass
class DataStats:
    path: str
    n_records: int = 0
    n_loaded: int = 0
    n_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    tokens: int = 0

    def line(self) -> str:
        s = f"{self.path}: {self.n_kept} training samples ({self.tokens} tokens)"
        if self.skipped:
            s += ", skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        return s


def load_dataset(path: str, processor, cfg: TrainConfig) -> tuple[SftDataset, DataStats]:
    """Read with the data stage's loader, then drop (and count) samples that cannot train."""
    from tqdm.auto import tqdm

    from vlft.data.dataset import load_samples
    from vlft.train.collator import SampleEncoder, SampleError

    result = load_samples(path, image_folder=cfg.image_folder, strict=cfg.strict_data)
    stats = DataStats(path=str(path), n_records=result.n_records, n_loaded=len(result.samples),
                      skipped=dict(result.skipped))
    for line in result.errors[:5]:
        log.warning(line)
    if len(result.errors) > 5:
        log.warning("... and %d more bad records", len(result.errors) - 5)
    encoder = SampleEncoder(processor, cfg.model_max_length)
    kept, lengths = [], []
    first_error: dict[str, str] = {}
    for s in tqdm(result.samples, desc="measuring samples", disable=len(result.samples) < 2000):
        try:
            lengths.append(encoder.measure(s))
            kept.append(s)
        except SampleError as e:
            stats.skipped[e.reason] = stats.skipped.get(e.reason, 0) + 1
            first_error.setdefault(e.reason, f"{path}: sample {s.get('id')}: {e}")
            result.rejects.append((e.reason, f"{path}: sample {s.get('id')}: {e}"))
    for line in first_error.values():
        log.warning("skipped: %s", line)
    rejects = result.write_rejects(Path(cfg.output_dir) / f"{Path(path).stem}.rejects.csv")
    if rejects is not None:
        log.warning("all %d skipped records are listed in %s", len(result.rejects), rejects)
    stats.n_kept, stats.tokens = len(kept), sum(lengths)
    if not kept:
        from vlft.data.dataset import DataError
        raise DataError(f"{path}: no usable training samples ({stats.line()})")
    return SftDataset(kept, lengths), stats


def setup_data(cfg: TrainConfig, processor) -> dict[str, Any]:
    """{'train': SftDataset, 'eval': SftDataset | None, 'stats': {...}}"""
    train, tstats = load_dataset(cfg.data_path, processor, cfg)
    log.debug(tstats.line())
    out: dict[str, Any] = {"train": train, "eval": None, "stats": {"train": tstats.__dict__}}
    if cfg.eval_data_path:
        ev, estats = load_dataset(cfg.eval_data_path, processor, cfg)
        log.debug(estats.line())
        out["eval"], out["stats"]["eval"] = ev, estats.__dict__
    return out


# -- model -------------------------------------------------------------------------------------
def prepare_for_kbit_training(model, gradient_checkpointing: bool) -> None:
    """What peft.prepare_model_for_kbit_training does, minus its fp32 upcast.

    PEFT's version casts every non-quantized bf16/fp16 parameter to fp32. On Qwen3-VL-4B that
    is the 389M-parameter embedding and the ~0.4B vision tower: +3 GB, which does not fit the
    8 GB target. Qwen's RMSNorm already computes in fp32, LoRA weights are created in fp32 by
    PEFT, and the Trainer runs bf16/fp16 autocast, so the upcast buys nothing here.
    """
    model.requires_grad_(False)
    keep_4bit_layout_trainable(model)
    if gradient_checkpointing:
        # Non-reentrant checkpointing does not need inputs that require grad; this keeps the
        # reentrant variant working too if a caller switches to it.
        model.enable_input_require_grads()


def keep_4bit_layout_trainable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16, ``Linear4bit.forward`` in eval mode without autograd (every evaluation)
    rewrites the weight in place into a layout whose matmul has no backward: every later training step
    then gives the adapters no gradient at all (and widths under 64 crash the repacking)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def setup_model(cfg: TrainConfig):
    """(peft model, processor, precision, target names). Base frozen, adapter attached."""
    import torch

    from vlft.adapters.registry import AdapterSpec, apply_adapter, count_parameters, resolve_target_modules
    from vlft.models.loading import load_model, load_processor, resolve_precision

    precision = resolve_precision(cfg.quant, cfg.bf16, cfg.fp16)
    if precision.device == "cuda" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    processor = load_processor(cfg.model_name_or_path, cfg.max_pixels, cfg.min_pixels)
    model = load_model(cfg.model_name_or_path, precision, attn_implementation=cfg.attn_implementation)
    model.config.use_cache = False
    if getattr(model.config, "text_config", None) is not None:
        model.config.text_config.use_cache = False
    if precision.quant != "none":
        prepare_for_kbit_training(model, cfg.gradient_checkpointing)
    model.requires_grad_(False)  # vision tower, merger, embeddings, lm_head: all frozen
    targets = resolve_target_modules(model, cfg.lora_target_modules)
    spec = AdapterSpec(targets=cfg.lora_target_modules, r=cfg.lora_r, alpha=cfg.lora_alpha,
                       dropout=cfg.lora_dropout, num_experts=cfg.num_experts, top_k=cfg.top_k,
                       router_aux_loss_coef=cfg.router_aux_loss_coef)
    model = apply_adapter(model, cfg.adapter, spec)
    trainable, total = count_parameters(model)
    print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: "
          f"{100 * trainable / max(total, 1):.4f} ({cfg.adapter} on {len(targets)} modules, "
          f"{precision.quant} base, {str(precision.dtype).replace('torch.', '')} compute, {precision.device})")
    return model, processor, precision, targets


def _moe_hooks(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.adapter != "moelora":
        return {}
    from vlft.tuners.moelora import moelora_aux_loss, moelora_stats
    return {"aux_loss_fn": moelora_aux_loss, "aux_coef": cfg.router_aux_loss_coef, "stats_fn": moelora_stats,
            "moelora": True}


# -- trainer -----------------------------------------------------------------------------------
def training_arguments(cfg: TrainConfig, precision, has_eval: bool):
    from transformers import TrainingArguments

    cuda = precision.device == "cuda"
    cfg = cfg.resolve_auto(precision.device)
    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy=cfg.save_strategy if has_eval else "no",
        eval_steps=cfg.save_steps if has_eval else None,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=not cuda,
        activation_checkpointing=False,  # set_checkpointing (build_trainer): LM layers only, non-reentrant
        remove_unused_columns=False,  # samples are dicts decoded by the collator
        label_names=["labels"],
        report_to=["swanlab"] if cfg.report_to == "swanlab" else "none",
        run_name=cfg.run_name or Path(cfg.output_dir).name,
        dataloader_num_workers=cfg.dataloader_num_workers,
        # forked once, not per epoch and eval pass (each fork re-imports and costs seconds of GPU idle)
        dataloader_persistent_workers=cfg.dataloader_num_workers > 0,
        # MoE-LoRA: experts no token picked in a micro-batch get no gradient.
        ddp_find_unused_parameters=cfg.adapter == "moelora",
        optim="adamw_torch",
        disable_tqdm=False,  # transformers hides the bar when its logger is quiet (our default)
    )


def set_checkpointing(model, cfg: TrainConfig) -> int:
    """Gradient checkpointing on every ``checkpoint_every``-th decoder layer (non-reentrant: keeps the
    MoE router gradient), never in the frozen vision tower; off without ``gradient_checkpointing``.
    Returns the number of checkpointed layers (-1: not a Qwen-VL model, HF's policy on all layers)."""
    from vlft.train import fast
    every = cfg.checkpoint_every if cfg.gradient_checkpointing else 0
    try:
        return fast.set_checkpointing(model, every=every)
    except TypeError:  # not a Qwen-VL ForConditionalGeneration
        if every:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return -1


def use_compile(cfg: TrainConfig, device: str) -> bool:
    """``cfg.compile``, or when left on auto: CUDA with triton installed."""
    from vlft.train.fast import compile_available
    ok, why = compile_available(device)
    if cfg.compile is None:
        if not ok and device == "cuda":
            log.warning("compiled layers off: %s", why)
        return ok
    return cfg.compile


def setup_layers(model, cfg: TrainConfig, device: str) -> str:
    """Compiled decoder layers (the partitioner recomputing activations when ``gradient_checkpointing``)
    or eager layers with gradient checkpointing; returns a one-line description."""
    from vlft.train import fast
    if use_compile(cfg, device):
        fast.set_checkpointing(model, every=0)
        graphs = cfg.compile_mode == "reduce-overhead"
        n = fast.compile_decoder_layers(model, memory_budget=0.0 if cfg.gradient_checkpointing else 1.0,
                                        mode=cfg.compile_mode if graphs else None)
        return (f"{n} compiled decoder layers" + (" as CUDA graphs" if graphs else "")
                + (", activations recomputed" if cfg.gradient_checkpointing else ""))
    n = set_checkpointing(model, cfg)
    return f"gradient checkpointing on {n} layers" if n else "no gradient checkpointing"


def graph_batching(cfg: TrainConfig, model) -> tuple[bool, int]:
    """(layers run as CUDA graphs, pad_to_multiple_of for the collator), after ``setup_layers``.

    Compiled layers recompile (10-40 s each, lora.py on an H100, bench/RESULTS.md run 18) for new
    lengths until the compiler goes dynamic, and CUDA graphs record once per batch shape, so lengths
    are padded to a multiple of 32 (COCO captions: one length, 128) whenever layers are compiled."""
    from vlft.train.fast.compile import compiled_decoder_layers
    compiled = bool(compiled_decoder_layers(model))
    graphs = cfg.compile_mode == "reduce-overhead" and compiled
    return graphs, cfg.pad_to_multiple_of or (COMPILED_PAD_MULTIPLE if compiled else 0)


def max_sample_tokens(data: dict[str, Any]) -> int:
    """Longest training or eval sample (tokens, images included): what the auto batch is sized for."""
    return max(max(ds.lengths, default=0) for ds in (data["train"], data["eval"]) if ds is not None)


def build_trainer(cfg: TrainConfig, model, processor, data: dict[str, Any], precision):
    cfg = cfg.resolve_auto(precision.device, max_sample_tokens(data))
    from vlft.train.collator import SftCollator
    from vlft.train.trainer import VlftTrainer

    from vlft.train.callbacks import use_console_progress

    args = training_arguments(cfg, precision, data["eval"] is not None)
    log.info(setup_layers(model, cfg, precision.device))
    graphs, pad = graph_batching(cfg, model)
    trainer = VlftTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["eval"],
                          data_collator=SftCollator(processor, cfg.model_max_length, pad_to_multiple_of=pad),
                          processing_class=processor, loss_impl=cfg.loss_impl,
                          loss_chunk_size=cfg.loss_chunk_size, cudagraphs=graphs, **_moe_hooks(cfg))
    use_console_progress(trainer)
    return trainer


def fit(trainer, cfg: TrainConfig):
    """Train, resuming from ``--resume_from_checkpoint`` (``auto``: latest by step) if given."""
    from vlft.train.checkpoint import resolve_resume
    resume = resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir)
    return trainer.train(resume_from_checkpoint=resume)


# -- save -----------------------------------------------------------------------------------------
def adapter_checksum(model) -> list[float]:
    """Order-sensitive fingerprint of the trainable tensors (compared across ranks)."""
    import torch
    total = torch.zeros(3, dtype=torch.float64)
    for i, (_, p) in enumerate(sorted((n, p) for n, p in model.named_parameters() if p.requires_grad)):
        v = p.detach().double().cpu().flatten()
        total += torch.stack([v.sum(), (v * v).sum(), (i + 1) * v.abs().sum()])
    return total.tolist()


def ranks_consistent(trainer) -> bool:
    """True when every rank holds the same adapter weights (always true on one process)."""
    import torch
    acc = trainer.accelerator
    if acc.num_processes == 1:
        return True
    local = torch.tensor(adapter_checksum(trainer.model), dtype=torch.float64, device=acc.device)
    allv = acc.gather(local.unsqueeze(0)).cpu()
    return bool(torch.allclose(allv, allv[:1].expand_as(allv), rtol=0, atol=0))


def save(trainer, cfg: TrainConfig, processor, data: dict[str, Any], train_output, precision,
         targets: list[str], swanlab_dir: Path | None) -> dict[str, Any]:
    """Adapter (PEFT format) + processor + training_summary.json in output_dir (main process)."""
    from vlft.adapters.registry import count_parameters
    from vlft.train.callbacks import memory_metrics
    from vlft.utils.io import write_json

    out = Path(cfg.output_dir)
    consistent = ranks_consistent(trainer)
    trainer.save_model(str(out))  # adapter_config.json + adapter_model.safetensors
    if not trainer.is_world_process_zero():
        return {}
    processor.save_pretrained(str(out))
    from vlft.models.identity import record_identity
    record_identity(out, trainer.accelerator.unwrap_model(trainer.model), cfg.model_name_or_path)
    from vlft.utils.io import apply_umask
    apply_umask(out)  # readable by a serving process of another user (safetensors temp files are 0600)
    trainable, total = count_parameters(trainer.model)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    world = trainer.accelerator.num_processes
    summary = {
        "adapter": cfg.adapter,
        "base_model": str(cfg.model_name_or_path),
        "target_modules": len(targets),
        "trainable_params": trainable,
        "all_params": total,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": train_output.training_loss,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "eval_loss": next((h["eval_loss"] for h in reversed(trainer.state.log_history) if "eval_loss" in h),
                          None),
        "runtime_s": train_output.metrics.get("train_runtime"),
        **trainer.meter.overall(world_size=world),
        **memory_metrics(),
        "precision": {"device": precision.device, "quant": precision.quant,
                      "dtype": str(precision.dtype).replace("torch.", "")},
        "world_size": world,
        "ranks_consistent": consistent,
        "data": data["stats"],
        "bad_images": trainer.bad_images.summary(),  # rows masked because their image did not decode
        "train_batch_shapes": sorted(trainer.batch_shapes),
        "log_history": trainer.state.log_history,  # per-log loss, lr, samples/s, eval loss
        "swanlab_dir": str(swanlab_dir) if swanlab_dir else None,
        "config": cfg.to_dict(),
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


def predict_and_log(trainer, cfg: TrainConfig, processor, data: dict[str, Any]) -> list[dict]:
    """Generate for a few samples; write sample_predictions.jsonl and the SwanLab table."""
    from vlft.train.callbacks import generate_predictions, log_prediction_table
    from vlft.train.collator import sample_images
    from vlft.utils.io import write_jsonl

    if cfg.num_sample_predictions == 0 or not trainer.is_world_process_zero():
        return []
    pool = data["eval"] or data["train"]
    samples = [pool[i] for i in range(min(cfg.num_sample_predictions, len(pool)))]
    rows = generate_predictions(trainer.model, processor, samples, cfg.max_new_tokens)
    write_jsonl(Path(cfg.output_dir) / PREDICTIONS_FILE, (
        {"id": r["id"], "image": next((str(x) for x in sample_images(s) if isinstance(x, (str, Path))), None),
         "reference": r["reference"], "prediction": r["prediction"]} for r, s in zip(rows, samples)))
    if cfg.report_to == "swanlab":
        log_prediction_table(rows, step=trainer.state.global_step)
    return rows


# -- the whole stage ------------------------------------------------------------------------------
def preflight(cfg: TrainConfig) -> None:
    """Fail in one line on missing inputs before spending minutes loading a 4B model."""
    from vlft.data.dataset import DataError
    from vlft.models.loading import check_model_dir
    from vlft.train.checkpoint import resolve_resume

    check_model_dir(cfg.model_name_or_path)
    for name in ("data_path", "eval_data_path"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise DataError(f"{name}: {path}: data file not found")
    if cfg.image_folder and not Path(cfg.image_folder).is_dir():
        raise DataError(f"image_folder: {cfg.image_folder}: folder not found")
    if (cfg.resume_from_checkpoint or "").lower() not in ("", "auto", "true", "latest", "false", "no", "none"):
        resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir)  # an explicit folder must exist


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune and save; returns the training summary (empty dict on non-main ranks)."""
    from transformers import set_seed

    from vlft.train import fast
    from vlft.train.callbacks import finish_swanlab, init_swanlab

    preflight(cfg)
    set_seed(cfg.seed)  # adapter init is part of "same run, same weights"
    model, processor, precision, targets = setup_model(cfg)
    data = setup_data(cfg, processor)
    longest = max_sample_tokens(data)
    print(f"data: {data['stats']['train']['n_kept']} training samples"
          + (f", {data['stats']['eval']['n_kept']} eval samples" if data["eval"] is not None else "")
          + f", longest {longest} tokens" + _skips(data["stats"]["train"]))
    cfg = cfg.resolve_auto(precision.device, longest)  # auto batch size / accumulation / learning rate
    print(f"batch {cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} accumulation, "
          f"learning rate {cfg.learning_rate:g}, {cfg.loss_impl} loss")
    trainer = build_trainer(cfg, model, processor, data, precision)
    swanlab_dir = None
    if cfg.report_to == "swanlab" and trainer.is_world_process_zero():
        swanlab_dir = init_swanlab(cfg.swanlab_project, trainer.args.run_name, cfg.output_dir,
                                   cfg.swanlab_mode, cfg.to_dict())
    try:
        train_output = fit(trainer, cfg)
        summary = save(trainer, cfg, processor, data, train_output, precision, targets, swanlab_dir)
        # generation's growing KV cache would make compiled layers recompile (CUDA graphs: record)
        # for every new length: a few sample predictions run eagerly
        fast.uncompile_decoder_layers(model)
        predict_and_log(trainer, cfg, processor, data)
    finally:
        if swanlab_dir is not None or cfg.report_to == "swanlab":
            finish_swanlab()
    if summary:
        print(f"saved adapter to {cfg.output_dir} (step {summary['global_step']}, "
              f"loss {_fmt(summary['first_loss'])} -> {_fmt(summary['final_loss'])}, "
              f"{summary['samples_per_second']:.2f} samples/s)")
        if summary["bad_images"]["files"]:
            print(f"skipped {len(summary['bad_images']['files'])} unreadable image(s) in "
                  f"{summary['bad_images']['rows']} rows: {', '.join(summary['bad_images']['files'])}")
    return summary


def _skips(stats: dict) -> str:
    sk = stats.get("skipped") or {}
    return (", skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(sk.items()))) if sk else ""


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"
