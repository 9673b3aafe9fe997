"""transformers.Trainer plus what it lacks here: the fast loss, CUDA-graph step marks, our metrics,
and the adapter method's training hooks (vlft.adapters.methods.TrainingHooks)."""

from __future__ import annotations

import time

from transformers import Trainer, TrainerCallback

from vlft.adapters.methods import NO_HOOKS, TrainingHooks
from vlft.train.collator import FILLER_ROWS_KEY
from vlft.reporting import ThroughputMeter, memory_metrics


class VlftTrainer(Trainer):
    """Trainer with the labelled-token loss, CUDA-graph step marks and throughput/memory logs. What an
    adapter method adds (an extra loss, per-step switches, metrics, its own checkpoint format) comes
    through ``hooks``; this class names no method.

    ``loss_impl``: 'fast' = ``vlft.train.fast.lm_loss`` (logits only on labelled tokens, chunked
    cross-entropy; same value as ``model(**batch).loss``); 'hf' = the model's own loss. Loss-only
    evaluation takes the labelled-token loss as well with 'fast' (the plain forward's full-vocabulary
    logits are the largest tensor of an evaluation).

    Extra loss (``hooks.extra_loss``): a method that applies its own gradient inside backward (MoE-LoRA's
    router loss) gets ``hooks.bind(model, grad_scale)`` with what the LM loss is scaled by (1 /
    accumulation steps, fp16 loss scale) and returns a detached value, which is only logged (as
    ``hooks.extra_loss_name``, the mean over the micro-batches since the last log): the reported
    ``loss`` is the LM loss alone. A value that still carries a graph is added as ``hooks.coef * value``,
    and then the reported loss includes it. ``hooks.start_micro_step`` is told whether the micro-batch
    belongs to a logged step, so a method can record statistics on those only.

    ``cudagraphs``: the decoder layers were compiled with ``mode="reduce-overhead"``; every micro-step
    then starts a new CUDA-graph iteration, and with gradient accumulation the first gradient of each
    window is copied out of the graphs' memory (``fast.compile.own_first_grad``).

    ``compiled``: the decoder layers run through torch.compile (default: ``cudagraphs``). Evaluation then
    runs them eagerly, so its batch shapes compile nothing and record no graphs next to the training ones;
    filler rows of the collator (``pad_rows_to``: a short last batch keeps the planned shape) are counted
    out of the throughput and kept out of evaluation batches.

    Per-micro-step counters (tokens, extra loss) stay on the device and are read at logging steps only.
    """

    def __init__(self, *args, hooks: TrainingHooks | None = None, loss_impl: str = "hf", loss_chunk_size: int = 256,
                 cudagraphs: bool = False, compiled: bool | None = None, **kwargs):
        self._loaders: list = []  # the DataLoaders handed out, whose workers release_data_workers() stops
        super().__init__(*args, **kwargs)
        self.cudagraphs = cudagraphs
        self.compiled = cudagraphs if compiled is None else compiled  # decoder layers run through torch.compile
        self.hooks = hooks or NO_HOOKS
        from vlft.train.collator import BadImageLog
        self.bad_images = BadImageLog()  # rows whose image did not decode (masked by the collator)
        self.loss_impl, self.loss_chunk_size = loss_impl, loss_chunk_size
        if loss_impl == "fast":
            # Qwen-VL classes declare accepts_loss_kwargs=False, so the Trainer would not count the labelled
            # tokens of an accumulation window (summed over ranks) and every micro-batch and rank would
            # weigh the same whatever its token count. lm_loss divides by that count itself.
            self.model_accepts_loss_kwargs = True
        self.meter = ThroughputMeter()
        # wall time inside train(): per optimizer step (evaluation and checkpoints left out), and the
        # evaluation / checkpoint time itself (vlft.train.phases splits the loop with these)
        self.step_seconds: list[float] = []
        self.eval_seconds = 0.0
        self.checkpoint_seconds = 0.0
        self.add_callback(_StepClock(self))
        self.batch_shapes: set[tuple[int, int]] = set()  # (batch, length) of the training micro-batches
        self._tokens = None            # device tensor: non-pad tokens since the last flush
        self._aux_sum = None           # device tensor: sum of extra-loss values since the last log
        self._aux_n = 0
        self._eval_loss_only = False   # inside a loss-only prediction_step
        self._grad_hooks: list = []
        if cudagraphs and self.args.gradient_accumulation_steps > 1:
            from vlft.train.fast.compile import keep_grads_out_of_graph_pool
            self._grad_hooks = keep_grads_out_of_graph_pool(self.accelerator.unwrap_model(self.model))
        self.hooks.bind(self.accelerator.unwrap_model(self.model), self._aux_grad_scale)

    def _aux_grad_scale(self):
        """What the LM loss is multiplied by before backward (read at each model forward, no host sync):
        1 / accumulation steps (the Trainer divides, or the loss is normalised by the token count
        of the whole accumulated batch), times the fp16 loss-scaler's current scale if any."""
        s = 1.0 / self._ga_steps()
        scaler = getattr(self.accelerator, "scaler", None)
        scale = getattr(scaler, "_scale", None) if scaler is not None and scaler.is_enabled() else None
        return s if scale is None else scale * s

    def _ga_steps(self) -> int:
        # set by the training loop (the last accumulation window of an epoch may be shorter)
        return getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)

    def train(self, *args, **kwargs):
        self.meter = ThroughputMeter()  # rates from the first step, not from Trainer construction
        self._tokens = None
        try:
            return super().train(*args, **kwargs)
        finally:
            self._flush_tokens()
            self.release_data_workers()

    def get_train_dataloader(self):
        return self._track_loader(super().get_train_dataloader())

    def _track_loader(self, loader):
        if all(loader is not known for known in self._loaders):  # an eval loader is cached and handed out again
            self._loaders.append(loader)
        return loader

    def release_data_workers(self) -> None:
        """Stop the worker processes that persistent DataLoaders (training and evaluation) keep between
        epochs, once the loop is done. Left to the interpreter's exit, torch 2.11 joined each one with a
        5-s timeout without first telling it to stop: 8 workers kept lora.py waiting 40 s after the
        adapter was saved (bench/RESULTS.md, run 27). A later evaluation starts new workers."""
        for loader in self._loaders:
            it = getattr(loader, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()  # tells the workers to stop, then joins them
            loader._iterator = None
        self._loaders = []

    def _flush_tokens(self) -> None:
        if self._tokens is not None:
            self.meter.add(samples=0, tokens=int(self._tokens))  # one host sync per log
            self._tokens = None

    def _logs_this_step(self) -> bool:
        """Whether the optimizer step this micro-batch belongs to ends in a training log."""
        from transformers.trainer_utils import IntervalStrategy

        if self.args.logging_strategy != IntervalStrategy.STEPS:
            return True
        step, every = self.state.global_step + 1, max(int(self.state.logging_steps or 1), 1)
        return step % every == 0 or (step == 1 and self.args.logging_first_step)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.bad_images.take(inputs)
        fillers = int(inputs.pop(FILLER_ROWS_KEY, 0) or 0)  # rows padding a short batch (one visible token each)
        self.hooks.start_micro_step(self._logs_this_step())
        self._mark_graph_step()
        mask = inputs.get("attention_mask")
        n = (mask.sum() - fillers) if mask is not None else inputs["input_ids"].numel()
        self._tokens = n if self._tokens is None else self._tokens + n
        self.meter.add(samples=len(inputs["input_ids"]) - fillers, tokens=0)
        self.batch_shapes.add(tuple(inputs["input_ids"].shape))  # under CUDA graphs: one recording each
        return super().training_step(model, inputs, num_items_in_batch)

    def _mark_graph_step(self) -> None:
        if self.cudagraphs:  # a new iteration: graph outputs of the previous one may be overwritten
            import torch
            torch.compiler.cudagraph_mark_step_begin()

    def evaluate(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.eval_seconds += time.perf_counter() - t

    def _save_checkpoint(self, model, trial) -> None:
        t = time.perf_counter()
        try:
            return super()._save_checkpoint(model, trial)
        finally:
            self.checkpoint_seconds += time.perf_counter() - t

    def get_eval_dataloader(self, eval_dataset=None):
        # evaluation averages the loss per batch row: filler rows would weigh a short batch as a full
        # one, and eval batches run on eager layers anyway (prediction_step), so they need no fixed shape
        collator = self.data_collator
        if hasattr(collator, "without_row_padding"):
            self.data_collator = collator.without_row_padding()
        try:
            return self._track_loader(super().get_eval_dataloader(eval_dataset))
        finally:
            self.data_collator = collator

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Loss-only evaluation takes the labelled-token loss too: the full-vocabulary logits (and their
        # fp32 upcast) of an eval batch are larger than everything the training step holds.
        # Compiled layers run eagerly here: no-grad graphs for every eval shape would each cost a compile
        # (and, under CUDA graphs, a recording next to the training ones).
        self._eval_loss_only = prediction_loss_only
        self.bad_images.take(inputs)
        inputs.pop(FILLER_ROWS_KEY, None)
        try:
            if not self.compiled:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
            import torch
            with torch.compiler.set_stance("force_eager"):
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        finally:
            self._eval_loss_only = False

    def _use_fast_loss(self, model, return_outputs: bool) -> bool:
        # DDP/FSDP wrappers must run their own forward (gradient sync): fast path on the bare model only.
        if self.loss_impl != "fast" or self.accelerator.unwrap_model(model) is not model:
            return False
        return (not return_outputs) if model.training else self._eval_loss_only

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._use_fast_loss(model, return_outputs):
            from vlft.train.fast import lm_loss
            loss = lm_loss(model, inputs, chunk_size=self.loss_chunk_size, num_items=num_items_in_batch)
            # Divided by the accumulated batch's token count: training_step must not divide again.
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss (tokens summed over ranks)
            outputs = {}  # no logits: Trainer.prediction_step reads an empty dict as none
        else:
            self.loss_is_scaled_for_ga = None  # Trainer decides, as for its own loss
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
        if model.training:
            aux = self.hooks.extra_loss(self.accelerator.unwrap_model(model))
            if aux is not None:  # None: none, or this forward recorded none (not a logged step)
                a = aux.detach().float()
                self._aux_sum = a if self._aux_sum is None else self._aux_sum + a
                self._aux_n += 1
                if aux.requires_grad:  # no in-backward path: add the term to the loss
                    term = self.hooks.coef * aux.to(loss.dtype)
                    scaled = (self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None
                              else self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                    if scaled:  # training_step will not divide by the accumulation steps
                        term = term / self._ga_steps()
                    loss = loss + term
        return (loss, outputs) if return_outputs else loss

    # -- a method with its own checkpoint format (e.g. adapter tensors only, not a PeftModel) ----------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        import os

        import torch

        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:  # (the Trainer calls _save on the saving rank only)
            return None
        if not self.hooks.save(self.accelerator.unwrap_model(self.model), output_dir):
            return super()._save(output_dir, state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not self.hooks.load_weights(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (not eval / end-of-training summary)
            self._flush_tokens()
            logs.update(self.meter.rates(world_size=self.accelerator.num_processes))
            logs.update(memory_metrics())
            logs.update(self.hooks.metrics(self.accelerator.unwrap_model(self.model)))
            if self._aux_n:  # mean over the micro-batches since the last log
                logs[self.hooks.extra_loss_name] = float(self._aux_sum) / self._aux_n
                self._aux_sum, self._aux_n = None, 0
        super().log(logs, start_time)


class _StepClock(TrainerCallback):
    """Wall time of each optimizer step, evaluation and checkpoints in between left out (they run
    after ``on_step_end``, so they fall into the next step's interval and are subtracted there)."""

    def __init__(self, trainer: VlftTrainer):
        self.trainer = trainer
        self._last = 0.0
        self._paused = 0.0

    def _pause(self) -> float:
        return self.trainer.eval_seconds + self.trainer.checkpoint_seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.step_seconds = []
        self._last, self._paused = time.perf_counter(), self._pause()

    def on_step_end(self, args, state, control, **kwargs):
        now, paused = time.perf_counter(), self._pause()
        self.trainer.step_seconds.append(max(now - self._last - (paused - self._paused), 0.0))
        self._last, self._paused = now, paused
