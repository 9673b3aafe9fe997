"""Adapter methods as plug-ins: one small interface and the name -> method table.

An :class:`AdapterMethod` is everything the training wing needs to know about one way of adapting a
model: how to build it onto a frozen base, whether DDP must look for parameters without a gradient,
whether export can merge it into the base weights, and the :class:`TrainingHooks` it adds to the
Trainer (an extra loss, per-micro-step switches, metrics, its own checkpoint format). LoRA, DoRA and
IA3 wrap PEFT; MoE-LoRA's method lives with its tuner (``vlft.tuners.moelora.method``).

A new method: subclass ``AdapterMethod`` next to its implementation and add one line to ``METHODS``
(see docs/architecture.md). Nothing in the recipe or the Trainer names a method.
"""

from __future__ import annotations

from typing import Any, Callable

from vlft.adapters.registry import (FEEDFORWARD_SUFFIXES, AdapterError, AdapterSpec, exact_target_regex,
                                    resolve_target_modules)


class TrainingHooks:
    """What an adapter method adds to the training step. The defaults add nothing.

    The Trainer calls ``bind`` once, ``start_micro_step`` before every micro-batch, ``extra_loss``
    after every training forward, ``metrics`` at logging steps, and ``save`` / ``load_weights``
    for checkpoints (False: the Trainer's own PEFT save / load)."""

    coef: float = 0.0           # weight of the extra loss in the total loss
    extra_loss_name: str = ""   # logged mean of the extra loss (e.g. "moe/aux_loss")

    def bind(self, model, grad_scale: Callable[[], float]) -> None:
        """``grad_scale()``: what the LM loss is multiplied by before backward (1 / accumulation steps,
        times the fp16 loss scale), for methods that apply their own gradient inside backward."""

    def start_micro_step(self, logs_this_step: bool) -> None:
        """Called before each training micro-batch; ``logs_this_step``: its optimizer step ends in a log."""

    def extra_loss(self, model) -> Any:
        """The last training forward's extra loss (a scalar tensor) or None. When it still carries a
        graph, the Trainer adds ``coef * value`` to the loss; a detached value is only logged (the
        method applied its gradient itself)."""
        return None

    def metrics(self, model) -> dict[str, float]:
        """Extra training-log entries (read at logging steps only)."""
        return {}

    def save(self, model, output_dir: str) -> bool:
        """Write the adapter into ``output_dir``; False: let the Trainer save (PEFT format)."""
        return False

    def load_weights(self, model, checkpoint_dir: str) -> bool:
        """Load a checkpoint's adapter weights into ``model`` (resume); False: the Trainer's own load."""
        return False


NO_HOOKS = TrainingHooks()


class AdapterMethod:
    """One adapter method: build it, and what training, DDP and export must know about it."""

    name: str = ""
    mergeable: bool = True                    # export can fold it into the base weights
    ddp_find_unused_parameters: bool = False  # some trainable parameters may get no gradient in a step

    def build(self, model, spec: AdapterSpec):
        """Attach the adapter to ``model`` (base weights frozen) and return the trainable model."""
        raise NotImplementedError

    def training_hooks(self, model, spec: AdapterSpec) -> TrainingHooks:
        return NO_HOOKS


class PeftLora(AdapterMethod):
    """LoRA (``use_dora=False``) or DoRA through PEFT's LoraConfig."""

    def __init__(self, name: str, use_dora: bool):
        self.name, self.use_dora = name, use_dora

    def build(self, model, spec: AdapterSpec):
        from peft import LoraConfig, TaskType, get_peft_model
        names = resolve_target_modules(model, spec.targets)
        cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                         bias="none", use_dora=self.use_dora, target_modules=exact_target_regex(model, names))
        return get_peft_model(model, cfg)


class PeftIA3(AdapterMethod):
    """IA3 through PEFT: learned scales; feed-forward outputs get their input scaled instead."""

    name = "ia3"

    def build(self, model, spec: AdapterSpec):
        from peft import IA3Config, TaskType, get_peft_model
        names = resolve_target_modules(model, spec.targets)
        ff = [n for n in names if n.rsplit(".", 1)[-1] in FEEDFORWARD_SUFFIXES]
        cfg = IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=exact_target_regex(model, names),
                        feedforward_modules=exact_target_regex(model, ff) if ff else [])
        return get_peft_model(model, cfg)


def _moelora() -> AdapterMethod:
    from vlft.tuners.moelora.method import MoeLoraMethod  # torch-heavy: imported when asked for
    return MoeLoraMethod()


# name -> method factory (the only table that knows which methods exist)
METHODS: dict[str, Callable[[], AdapterMethod]] = {
    "lora": lambda: PeftLora("lora", use_dora=False),
    "dora": lambda: PeftLora("dora", use_dora=True),
    "ia3": PeftIA3,
    "moelora": _moelora,
}


def get_method(name: str) -> AdapterMethod:
    if name not in METHODS:
        raise AdapterError(f"adapter: {name!r} is not one of {', '.join(METHODS)}")
    return METHODS[name]()
