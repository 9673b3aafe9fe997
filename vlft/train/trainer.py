"""transformers.Trainer plus what it lacks here: the fast loss, the MoE aux loss, and our metrics."""

from __future__ import annotations

from typing import Any, Callable

from transformers import Trainer

from vlft.train.callbacks import ThroughputMeter, memory_metrics


class VlftTrainer(Trainer):
    """Trainer with the labelled-token loss, the MoE-LoRA router loss and throughput/memory/MoE logs.

    ``loss_impl``: 'fast' = ``vlft.train.fast.lm_loss`` (logits only on labelled tokens, chunked
    cross-entropy; same value as ``model(**batch).loss``) in training; 'hf' = the model's own loss.
    Evaluation always uses the model's loss.

    MoE-LoRA (``moelora=True``): the router load-balancing gradient, ``aux_coef * d aux / d router``,
    is applied inside each layer's backward by the tuner (``set_moelora_aux``), scaled like the LM
    loss (1 / accumulation steps, fp16 loss scale). The reported ``loss`` is then the LM loss
    alone; ``moe/aux_loss`` logs the aux value (mean over the micro-batches since the last log).
    Only when the model's aux loss still carries a graph (a tuner without the in-backward path)
    is ``aux_coef * aux`` added to the loss here, and then the reported loss includes it.

    ``cudagraphs``: the decoder layers were compiled with ``mode="reduce-overhead"``; every micro-step
    then starts a new CUDA-graph iteration, and with gradient accumulation the first gradient of each
    window is copied out of the graphs' memory (``fast.compile.own_first_grad``). Evaluation runs the
    layers eagerly, so its batch shapes record no graphs next to the training ones.

    Loss-only evaluation uses the labelled-token loss as well (``loss_impl='fast'``): the plain
    forward's full-vocabulary logits raised peak reserved memory by 1.8 GiB at the first evaluation
    (lora.py on an H100, 6.7 -> 8.6 GiB at length 256, bench/RESULTS.md run 19).

    Routing statistics and the logged aux value are recorded on the micro-batches of logged steps
    only (``moe/aux_loss`` is their mean); the aux gradient itself is applied on every step.

    ``aux_loss_fn(model) -> scalar tensor | None`` reads the router state of the forward just run;
    ``stats_fn(model) -> dict[str, float]`` gives per-expert load / router entropy.
    Per-micro-step counters (tokens, aux) stay on the device and are read at logging steps only.
    """

    def __init__(self, *args, aux_loss_fn: Callable[[Any], Any] | None = None, aux_coef: float = 0.0,
                 stats_fn: Callable[[Any], dict] | None = None, moelora: bool = False,
                 loss_impl: str = "hf", loss_chunk_size: int = 256, cudagraphs: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.cudagraphs = cudagraphs
        self.moelora = moelora
        from vlft.train.collator import BadImageLog
        self.bad_images = BadImageLog()  # rows whose image did not decode (masked by the collator)
        self.aux_loss_fn = aux_loss_fn if aux_coef > 0 else None
        self.aux_coef = aux_coef
        self.stats_fn = stats_fn
        self.loss_impl, self.loss_chunk_size = loss_impl, loss_chunk_size
        self.meter = ThroughputMeter()
        self.batch_shapes: set[tuple[int, int]] = set()  # (batch, length) of the training micro-batches
        self._tokens = None            # device tensor: non-pad tokens since the last flush
        self._aux_sum = None           # device tensor: sum of aux values since the last log
        self._aux_n = 0
        self._eval_loss_only = False   # inside a loss-only prediction_step
        self._moe_contexts: list = []
        self._grad_hooks: list = []
        if cudagraphs and self.args.gradient_accumulation_steps > 1:
            from vlft.train.fast.compile import keep_grads_out_of_graph_pool
            self._grad_hooks = keep_grads_out_of_graph_pool(self.accelerator.unwrap_model(self.model))
        if moelora:
            from vlft.tuners.moelora import routing_contexts, set_moelora_aux
            bare = self.accelerator.unwrap_model(self.model)
            set_moelora_aux(bare, coef=aux_coef, grad_scale=self._aux_grad_scale)
            self._moe_contexts = routing_contexts(bare)

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
        # MoE-LoRA routing statistics (and the logged aux value) only on the micro-batches of a
        # logged step: on the others the layers read nothing back, which keeps the compiled step lean.
        self.bad_images.take(inputs)
        stats = self._logs_this_step()
        for ctx in self._moe_contexts:
            ctx.collect_stats = stats
        self._mark_graph_step()
        mask = inputs.get("attention_mask")
        n = mask.sum() if mask is not None else inputs["input_ids"].numel()
        self._tokens = n if self._tokens is None else self._tokens + n
        self.meter.add(samples=len(inputs["input_ids"]), tokens=0)
        self.batch_shapes.add(tuple(inputs["input_ids"].shape))  # under CUDA graphs: one recording each
        return super().training_step(model, inputs, num_items_in_batch)

    def _mark_graph_step(self) -> None:
        if self.cudagraphs:  # a new iteration: graph outputs of the previous one may be overwritten
            import torch
            torch.compiler.cudagraph_mark_step_begin()

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Loss-only evaluation takes the labelled-token loss too: the full-vocabulary logits (and their
        # fp32 upcast) of a 24x256 eval batch are ~5 GiB, more than the training step itself.
        self._eval_loss_only = prediction_loss_only
        self.bad_images.take(inputs)
        try:
            if not self.cudagraphs:
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
        if self.aux_loss_fn is not None and model.training:
            aux = self.aux_loss_fn(self.accelerator.unwrap_model(model))
            if aux is not None:  # None: this forward recorded no routing (not a logged step)
                a = aux.detach().float()
                self._aux_sum = a if self._aux_sum is None else self._aux_sum + a
                self._aux_n += 1
                if aux.requires_grad:  # no in-backward path: add the term to the loss
                    term = self.aux_coef * aux.to(loss.dtype)
                    scaled = (self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None
                              else self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                    if scaled:  # training_step will not divide by the accumulation steps
                        term = term / self._ga_steps()
                    loss = loss + term
        return (loss, outputs) if return_outputs else loss

    # -- MoE-LoRA is injected in place (not a PeftModel): save/load only its tensors, so a
    # checkpoint holds the adapter (MBs), not the whole base model (GBs).
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.moelora:
            return super()._save(output_dir, state_dict)
        import os

        import torch

        from vlft.tuners.moelora import save_moelora
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        save_moelora(self.accelerator.unwrap_model(self.model), output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not self.moelora:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from vlft.tuners.moelora import load_moelora_weights
        load_moelora_weights(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (not eval / end-of-training summary)
            self._flush_tokens()
            logs.update(self.meter.rates(world_size=self.accelerator.num_processes))
            logs.update(memory_metrics())
            if self.stats_fn is not None:  # routing of the last training forward
                stats = self.stats_fn(self.accelerator.unwrap_model(self.model)) or {}
                logs.update({k if k.startswith("moe/") else f"moe/{k}": float(v) for k, v in stats.items()})
            if self._aux_n:  # mean over the micro-batches since the last log
                logs["moe/aux_loss"] = float(self._aux_sum) / self._aux_n
                self._aux_sum, self._aux_n = None, 0
        super().log(logs, start_time)
