"""MoE-LoRA as an adapter method (vlft.adapters.methods): build, training hooks, checkpoints.

Everything the training wing must know about MoE-LoRA is here, so the recipe and the Trainer
never name it:
- build: targets resolved by the project's one rule, then ``apply_moelora`` in place;
- DDP: experts no token picked in a micro-batch get no gradient (``ddp_find_unused_parameters``);
- the router load-balancing gradient is applied inside each layer's backward, scaled like the LM
  loss (``bind``); its value is logged, not added (``extra_loss`` is detached);
- routing statistics are recorded only on the micro-batches of logged steps (``start_micro_step``);
- checkpoints hold the adapter tensors only (``save`` / ``load_weights``), never the base model;
- not mergeable: routing depends on the token, so there is no single weight delta to fold in.
"""

from __future__ import annotations

from typing import Any, Callable

from vlft.adapters.methods import AdapterMethod, TrainingHooks
from vlft.adapters.registry import AdapterSpec, exact_target_regex, resolve_target_modules


class MoeLoraHooks(TrainingHooks):
    extra_loss_name = "moe/aux_loss"

    def __init__(self, coef: float):
        self.coef = coef
        self._contexts: list = []

    def bind(self, model, grad_scale: Callable[[], float]) -> None:
        from vlft.tuners.moelora.model import routing_contexts, set_moelora_aux
        set_moelora_aux(model, coef=self.coef, grad_scale=grad_scale)
        self._contexts = routing_contexts(model)

    def start_micro_step(self, logs_this_step: bool) -> None:
        # on the other micro-batches the layers read nothing back, which keeps the compiled step lean
        for ctx in self._contexts:
            ctx.collect_stats = logs_this_step

    def extra_loss(self, model) -> Any:
        if self.coef <= 0:
            return None
        from vlft.tuners.moelora.stats import moelora_aux_loss
        return moelora_aux_loss(model)

    def metrics(self, model) -> dict[str, float]:
        from vlft.tuners.moelora.stats import moelora_stats
        stats = moelora_stats(model) or {}
        return {k if k.startswith("moe/") else f"moe/{k}": float(v) for k, v in stats.items()}

    def save(self, model, output_dir: str) -> bool:
        from vlft.tuners.moelora.io import save_moelora
        save_moelora(model, output_dir)
        return True

    def load_weights(self, model, checkpoint_dir: str) -> bool:
        from vlft.tuners.moelora.io import load_moelora_weights
        load_moelora_weights(model, checkpoint_dir)
        return True


class MoeLoraMethod(AdapterMethod):
    name = "moelora"
    mergeable = False
    ddp_find_unused_parameters = True

    def build(self, model, spec: AdapterSpec):
        from vlft.tuners.moelora.config import MoeLoraConfig
        from vlft.tuners.moelora.model import apply_moelora
        opts = options_of(spec)
        names = resolve_target_modules(model, spec.targets)
        cfg = MoeLoraConfig(target_modules=exact_target_regex(model, names), r=spec.r, lora_alpha=spec.alpha,
                            lora_dropout=spec.dropout, num_experts=opts.num_experts, top_k=opts.top_k,
                            router_aux_loss_coef=opts.router_aux_loss_coef)
        model = apply_moelora(model, cfg)
        # injected in place (no PeftModel wrapper): this flag tells transformers' quantized-training
        # guard that the 4-bit base carries trainable adapters
        model._hf_peft_config_loaded = True
        return model

    def training_hooks(self, model, spec: AdapterSpec) -> TrainingHooks:
        return MoeLoraHooks(options_of(spec).router_aux_loss_coef)


def options_of(spec: AdapterSpec):
    """The spec's MoE-LoRA options (``vlft.train.config.MoeLoraOptions``), else the defaults."""
    from vlft.train.config import MoeLoraOptions
    return spec.options if spec.options is not None else MoeLoraOptions()
