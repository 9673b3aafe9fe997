"""transformers.Trainer plus the two things it lacks here: the MoE aux loss and our metrics."""

from __future__ import annotations

from typing import Any, Callable

from transformers import Trainer

from vlft.train.callbacks import ThroughputMeter, memory_metrics


class VlftTrainer(Trainer):
    """Adds ``router_aux_loss_coef * aux_loss`` to the LM loss and logs throughput/memory/MoE stats.

    ``aux_loss_fn(model) -> scalar tensor`` reads the router state of the forward just run;
    ``stats_fn(model) -> dict[str, float]`` gives per-expert load / router entropy.
    """

    def __init__(self, *args, aux_loss_fn: Callable[[Any], Any] | None = None, aux_coef: float = 0.0,
                 stats_fn: Callable[[Any], dict] | None = None, moelora: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.moelora = moelora
        self.aux_loss_fn = aux_loss_fn if aux_coef > 0 else None
        self.aux_coef = aux_coef
        self.stats_fn = stats_fn
        self.meter = ThroughputMeter()
        self._aux_sum = 0.0
        self._aux_n = 0

    def train(self, *args, **kwargs):
        self.meter = ThroughputMeter()  # rates from the first step, not from Trainer construction
        return super().train(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        mask = inputs.get("attention_mask")
        self.meter.add(samples=len(inputs["input_ids"]),
                       tokens=int(mask.sum()) if mask is not None else inputs["input_ids"].numel())
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if self.aux_loss_fn is not None and model.training:
            aux = self.aux_loss_fn(self.accelerator.unwrap_model(model))
            if aux is not None:
                self._aux_sum += float(aux.detach())
                self._aux_n += 1
                term = self.aux_coef * aux.to(loss.dtype)
                # When the model normalised the LM loss by the token count of the whole
                # accumulated batch, training_step will not divide by the accumulation steps;
                # the aux term (a per-micro-batch mean) must then be divided here.
                if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                    # (No process-count factor: DDP averages this per-rank term as intended.)
                    term = term / self.current_gradient_accumulation_steps
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
            logs.update(self.meter.rates(world_size=self.accelerator.num_processes))
            logs.update(memory_metrics())
            if self.stats_fn is not None:  # routing of the last training forward
                stats = self.stats_fn(self.accelerator.unwrap_model(self.model)) or {}
                logs.update({k if k.startswith("moe/") else f"moe/{k}": float(v) for k, v in stats.items()})
            if self._aux_n:  # mean over the micro-batches since the last log
                logs["moe/aux_loss"] = self._aux_sum / self._aux_n
                self._aux_sum, self._aux_n = 0.0, 0
        super().log(logs, start_time)
