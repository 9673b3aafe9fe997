"""The fine-tuning recipe: read it top to bottom.

    recipe = FinetuneRecipe(cfg)
    recipe.setup()     # check inputs; processor; read + measure the data; plan; model + adapter; trainer
    recipe.train()     # the Trainer's loop, resuming where the plan says
    recipe.save()      # adapter + processor + training_summary.json
    recipe.predict()   # a few sample predictions (VLGenerator), file + SwanLab table

``train(cfg)`` runs all four (with SwanLab around them) and is the one function the ``lora.py`` /
``MoeLORA.py`` CLIs and notebooks call. The data is read and validated before the model is loaded,
so a bad data file fails in seconds, not after minutes of loading a 4B model. Every "auto" of the
run is decided once, by ``vlft.train.plan.make_plan``; the adapter method (LoRA, DoRA, IA3,
MoE-LoRA) comes from the name -> method table in ``vlft.adapters.methods``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from vlft.train.config import TrainConfig
from vlft.train.data import TrainingData, load_training_data
from vlft.train.phases import PhaseClock
from vlft.train.plan import RunPlan, make_plan

log = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"
PREDICTIONS_FILE = "sample_predictions.jsonl"


# -- model -------------------------------------------------------------------------------------
def prepare_for_kbit_training(model, gradient_checkpointing: bool) -> None:
    """What peft.prepare_model_for_kbit_training does, minus its fp32 upcast.

    PEFT's version casts every non-quantized bf16/fp16 parameter to fp32. On Qwen3-VL-4B that
    is the 389M-parameter embedding and the ~0.4B vision tower, which does not fit the 8 GB
    target. Qwen's RMSNorm already computes in fp32, LoRA weights are created in fp32 by
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


def load_base_model(cfg: TrainConfig, plan: RunPlan):
    """The frozen base model in the plan's precision, ready for an adapter."""
    from vlft.models.loading import load_model

    model = load_model(cfg.model_name_or_path, plan.precision, attn_implementation=cfg.attn_implementation)
    model.config.use_cache = False
    if getattr(model.config, "text_config", None) is not None:
        model.config.text_config.use_cache = False
    if plan.precision.quant != "none":
        prepare_for_kbit_training(model, cfg.gradient_checkpointing)
    model.requires_grad_(False)  # vision tower, merger, embeddings, lm_head: all frozen
    return model


def setup_layers(model, plan: RunPlan) -> str:
    """Compiled decoder layers (the partitioner recomputing activations when the plan says so) or
    eager layers with gradient checkpointing on every n-th one; returns a one-line description."""
    from vlft.train import fast
    if plan.compile:
        from vlft.train.fast.cache import use_compile_cache
        use_compile_cache(plan.compile_cache_dir)  # compiled artifacts reused across runs and processes
        fast.set_checkpointing(model, every=0)
        n = fast.compile_decoder_layers(model, memory_budget=0.0 if plan.recompute_activations else 1.0,
                                        mode="reduce-overhead" if plan.cuda_graphs else None)
        return (f"{n} compiled decoder layers" + (" as CUDA graphs" if plan.cuda_graphs else "")
                + (", activations recomputed" if plan.recompute_activations else ""))
    n = set_checkpointing(model, plan.checkpoint_every)
    return f"gradient checkpointing on {n} layers" if n else "no gradient checkpointing"


def set_checkpointing(model, every: int) -> int:
    """Gradient checkpointing on every ``every``-th decoder layer (non-reentrant: keeps the MoE router
    gradient), never in the frozen vision tower; 0 = off. Returns the number of checkpointed layers
    (-1: not a Qwen-VL model, HF's policy on all layers)."""
    from vlft.train import fast
    try:
        return fast.set_checkpointing(model, every=every)
    except TypeError:  # not a Qwen-VL ForConditionalGeneration
        if every:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return -1


# -- trainer -----------------------------------------------------------------------------------
def training_arguments(cfg: TrainConfig, plan: RunPlan, has_eval: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=plan.batch_size,
        per_device_eval_batch_size=plan.batch_size,
        gradient_accumulation_steps=plan.accumulation,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=plan.learning_rate,
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
        bf16=plan.precision.bf16,
        fp16=plan.precision.fp16,
        use_cpu=plan.device != "cuda",
        activation_checkpointing=False,  # setup_layers: LM layers only, non-reentrant
        remove_unused_columns=False,  # samples are dicts decoded by the collator
        label_names=["labels"],
        report_to=["swanlab"] if cfg.report_to == "swanlab" else "none",
        run_name=cfg.run_name or Path(cfg.output_dir).name,
        dataloader_num_workers=plan.workers,
        # forked once, not per epoch and eval pass (each fork re-imports and costs seconds of GPU idle)
        dataloader_persistent_workers=plan.workers > 0,
        ddp_find_unused_parameters=plan.ddp_find_unused_parameters,
        optim="adamw_torch",
        disable_tqdm=False,  # transformers hides the bar when its logger is quiet (our default)
    )


def adapter_spec(cfg: TrainConfig):
    """The adapter settings of ``cfg`` (targets, rank, ... and the method's own options)."""
    from vlft.adapters.registry import AdapterSpec
    return AdapterSpec(targets=cfg.lora_target_modules, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                       options=cfg.method_options)


def build_trainer(cfg: TrainConfig, plan: RunPlan, model, processor, data: TrainingData, hooks=None):
    """The Trainer over the planned layers, batches and arguments, with the adapter method's hooks."""
    from vlft.train.callbacks import use_console_progress
    from vlft.train.collator import SftCollator
    from vlft.train.trainer import VlftTrainer

    log.info(setup_layers(model, plan))
    trainer = VlftTrainer(model=model, args=training_arguments(cfg, plan, data.eval is not None),
                          train_dataset=data.train, eval_dataset=data.eval,
                          data_collator=SftCollator(processor, cfg.model_max_length,
                                                    pad_to_multiple_of=plan.pad_to_multiple_of,
                                                    pad_rows_to=plan.pad_rows_to),
                          processing_class=processor, loss_impl=cfg.loss_impl,
                          loss_chunk_size=cfg.loss_chunk_size, cudagraphs=plan.cuda_graphs,
                          compiled=plan.compile, hooks=hooks)
    use_console_progress(trainer)
    return trainer


# -- checks ---------------------------------------------------------------------------------------
def preflight(cfg: TrainConfig) -> None:
    """Fail in one line on missing inputs before reading data or loading anything."""
    from vlft.data.dataset import DataError
    from vlft.models.loading import check_model_dir

    check_model_dir(cfg.model_name_or_path)
    for name in ("data_path", "eval_data_path"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise DataError(f"{name}: {path}: data file not found")
    if cfg.image_folder and not Path(cfg.image_folder).is_dir():
        raise DataError(f"image_folder: {cfg.image_folder}: folder not found")


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


# -- the recipe -----------------------------------------------------------------------------------
class FinetuneRecipe:
    """One training run, its state on ``self``: setup() -> train() -> save() -> predict()."""

    def __init__(self, cfg: TrainConfig):
        from vlft.adapters.methods import get_method
        self.clock = PhaseClock()  # where the run's wall time goes (vlft.train.phases)
        self.cfg = cfg
        with self.clock.phase("load"):  # a method's module may be the first to import torch (seconds)
            self.method = get_method(cfg.adapter)  # LoRA, DoRA, IA3, MoE-LoRA: vlft.adapters.methods.METHODS
        self.spec = adapter_spec(cfg)
        self.processor = None
        self.data: TrainingData | None = None
        self.plan: RunPlan | None = None
        self.model = None
        self.targets: list[str] = []
        self.trainer = None
        self.train_output = None
        self.summary: dict[str, Any] = {}
        self.swanlab_dir: Path | None = None

    # 1. everything up to the first step -----------------------------------------------------------
    def setup(self) -> "FinetuneRecipe":
        cfg, clock = self.cfg, self.clock
        with clock.phase("load"):  # the first transformers import is part of loading (seconds)
            from transformers import set_seed

            from vlft.models.loading import load_processor
            preflight(cfg)
            self.processor = load_processor(cfg.model_name_or_path, cfg.max_pixels, cfg.min_pixels)
        with clock.phase("data"):
            self.data = load_training_data(cfg, self.processor)  # bad data fails here, before the model loads
        print(self.data.line())
        self.plan = make_plan(cfg, self.data.max_len, method=self.method, n_train=len(self.data.train))
        print(self.plan.line() + f", {cfg.loss_impl} loss")
        with clock.phase("load"):
            self._use_local_gpu()
            set_seed(cfg.seed)  # adapter init is part of "same run, same weights"
            self.model = self._attach_adapter(load_base_model(cfg, self.plan))
            self.trainer = build_trainer(cfg, self.plan, self.model, self.processor, self.data,
                                         hooks=self.method.training_hooks(self.model, self.spec))
        return self

    def _use_local_gpu(self) -> None:
        if self.plan.device == "cuda" and "LOCAL_RANK" in os.environ:
            import torch
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))

    def _attach_adapter(self, model):
        from vlft.adapters.registry import count_parameters, resolve_target_modules

        cfg, p = self.cfg, self.plan.precision
        self.targets = resolve_target_modules(model, self.spec.targets)
        model = self.method.build(model, self.spec)
        trainable, total = count_parameters(model)
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: "
              f"{100 * trainable / max(total, 1):.4f} ({cfg.adapter} on {len(self.targets)} modules, "
              f"{p.quant} base, {str(p.dtype).replace('torch.', '')} compute, {p.device})")
        return model

    # 2. the training loop ---------------------------------------------------------------------------
    def train(self):
        """Train, resuming from the plan's checkpoint (``--resume_from_checkpoint``) if any."""
        import time

        from vlft.train.phases import compiler_seconds
        tr = self.trainer
        t, eval0, save0, comp0 = time.perf_counter(), tr.eval_seconds, tr.checkpoint_seconds, compiler_seconds()
        try:
            self.train_output = tr.train(resume_from_checkpoint=self.plan.resume_from)
        finally:
            self.clock.add_training_loop(time.perf_counter() - t, tr.step_seconds, tr.eval_seconds - eval0,
                                         tr.checkpoint_seconds - save0, compiler_seconds() - comp0)
        return self.train_output

    # 3. the adapter and what the run did ------------------------------------------------------------
    def save(self) -> dict[str, Any]:
        """Adapter (PEFT format) + processor + training_summary.json in output_dir (main process)."""
        from vlft.adapters.registry import count_parameters
        from vlft.reporting import memory_metrics
        from vlft.utils.io import write_json

        trainer, cfg = self.trainer, self.cfg
        out = Path(cfg.output_dir)
        consistent = ranks_consistent(trainer)
        trainer.save_model(str(out))  # adapter_config.json + adapter_model.safetensors
        if not trainer.is_world_process_zero():
            return {}
        self.processor.save_pretrained(str(out))
        from vlft.models.identity import record_identity
        from vlft.utils.io import apply_umask
        record_identity(out, trainer.accelerator.unwrap_model(trainer.model), cfg.model_name_or_path)
        apply_umask(out)  # readable by a serving process of another user (safetensors temp files are 0600)
        trainable, total = count_parameters(trainer.model)
        history = trainer.state.log_history
        losses = [h["loss"] for h in history if "loss" in h]
        world = trainer.accelerator.num_processes
        p = self.plan.precision
        self.summary = {
            "adapter": cfg.adapter,
            "base_model": str(cfg.model_name_or_path),
            "target_modules": len(self.targets),
            "trainable_params": trainable,
            "all_params": total,
            "global_step": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "train_loss": self.train_output.training_loss,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "eval_loss": next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None),
            "runtime_s": self.train_output.metrics.get("train_runtime"),
            **trainer.meter.overall(world_size=world),
            **memory_metrics(),
            "precision": {"device": p.device, "quant": p.quant, "dtype": str(p.dtype).replace("torch.", "")},
            "world_size": world,
            "ranks_consistent": consistent,
            "data": self.data.stats,
            "bad_images": trainer.bad_images.summary(),  # rows masked because their image did not decode
            "train_batch_shapes": sorted(trainer.batch_shapes),
            "log_history": history,  # per-log loss, lr, samples/s, eval loss
            "swanlab_dir": str(self.swanlab_dir) if self.swanlab_dir else None,
            "plan": self.plan.to_dict(),  # every auto setting as resolved
            "config": cfg.to_dict(),  # as given (auto fields null)
        }
        write_json(out / SUMMARY_FILE, self.summary)
        return self.summary

    # 4. a few sample predictions --------------------------------------------------------------------
    def predict(self) -> list[dict]:
        """Greedy answers (VLGenerator, as test.py and evaluation) for a few held-out samples (else
        training samples): sample_predictions.jsonl and the SwanLab prediction table."""
        from vlft.infer import ImageError, VLGenerator, load_image
        from vlft.reporting import log_prediction_table
        from vlft.train.collator import sample_images
        from vlft.utils.io import write_jsonl

        cfg, trainer = self.cfg, self.trainer
        if cfg.num_sample_predictions == 0 or not trainer.is_world_process_zero():
            return []
        pool = self.data.eval or self.data.train
        samples = [pool[i] for i in range(min(cfg.num_sample_predictions, len(pool)))]
        model, tokenizer = trainer.model, self.processor.tokenizer
        was_training, padding_side = model.training, tokenizer.padding_side
        generator = VLGenerator.from_model(model, self.processor)
        rows = []
        try:
            for s in samples:
                prompt, reference = prompt_and_reference(s)
                images = sample_images({"messages": prompt})
                row = {"id": s.get("id", ""), "image": None, "reference": reference, "prediction": ""}
                try:
                    row["image"] = load_image(images[0]) if images else None
                    row["prediction"] = generator.generate(prompt, max_new_tokens=cfg.max_new_tokens).strip()
                except ImageError as e:  # an unreadable image: this row only, named (rows stay aligned)
                    row["error"] = str(e)
                rows.append(row)
        finally:
            model.train(was_training)
            tokenizer.padding_side = padding_side
        write_jsonl(Path(cfg.output_dir) / PREDICTIONS_FILE, (
            {"id": r["id"], "image": next((str(x) for x in sample_images(s) if isinstance(x, (str, Path))), None),
             "reference": r["reference"], "prediction": r["prediction"]} for r, s in zip(rows, samples)))
        if cfg.report_to == "swanlab":
            log_prediction_table(rows, step=trainer.state.global_step)
        return rows

    def _record_phases(self) -> None:
        """The phase breakdown: one printed line, training_summary.json's "phases", SwanLab."""
        if not self.summary:  # not the main process
            return
        from vlft.utils.io import write_json
        phases = self.clock.as_dict()
        plan = self.plan
        if plan.compile:  # the next plan of this model and recipe weighs compiling with this cost
            from vlft.train.fast.cache import record_compile_cost
            from vlft.train.plan import compile_cost_key
            record_compile_cost(plan.compile_cache_dir, compile_cost_key(self.cfg, plan.precision.quant,
                                                                         plan.compile_mode, plan.batch_size),
                                phases["compile"])
        self.summary["phases"] = phases
        write_json(Path(self.cfg.output_dir) / SUMMARY_FILE, self.summary)
        print(self.clock.line())
        if self.cfg.report_to == "swanlab":
            from vlft.reporting import log_scalars
            log_scalars({f"phases/{k}_s": v for k, v in phases.items()}, step=self.trainer.state.global_step)

    # the whole stage --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """setup -> train -> save -> predict, logged to SwanLab; returns the summary ({} off rank 0)."""
        from vlft.reporting import finish_swanlab, init_swanlab

        cfg = self.cfg
        self.setup()
        if cfg.report_to == "swanlab" and self.trainer.is_world_process_zero():
            self.swanlab_dir = init_swanlab(cfg.swanlab_project, self.trainer.args.run_name, cfg.output_dir,
                                            cfg.swanlab_mode, {**cfg.to_dict(), "plan": self.plan.to_dict()})
        try:
            self.train()
            with self.clock.phase("save"):
                self.save()
            # generation's growing KV cache would make compiled layers recompile (CUDA graphs: record)
            # for every new length: the few sample predictions run eagerly. Imported here, not at the
            # top of run(): its torch import then falls in "load", where the phase line says it is.
            from vlft.train import fast
            fast.uncompile_decoder_layers(self.model)
            with self.clock.phase("predict"):
                self.predict()
            self._record_phases()
        finally:
            if cfg.report_to == "swanlab":
                finish_swanlab()
        if self.summary:
            s = self.summary
            print(f"saved adapter to {cfg.output_dir} (step {s['global_step']}, "
                  f"loss {_fmt(s['first_loss'])} -> {_fmt(s['final_loss'])}, "
                  f"{s['samples_per_second']:.2f} samples/s)")
            if s["bad_images"]["files"]:
                print(f"skipped {len(s['bad_images']['files'])} unreadable image(s) in "
                      f"{s['bad_images']['rows']} rows: {', '.join(s['bad_images']['files'])}")
        return self.summary


def prompt_and_reference(sample: dict) -> tuple[list[dict], str]:
    """Messages up to (not including) the last assistant turn, and that turn's text."""
    from vlft.train.collator import message_text
    msgs = sample["messages"]
    last = max(i for i, m in enumerate(msgs) if m.get("role") == "assistant")
    return msgs[:last], message_text(msgs[last])


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune and save; returns the training summary (empty dict on non-main ranks)."""
    return FinetuneRecipe(cfg).run()


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"
