"""One training forward for Qwen-VL that returns the loss without full-vocabulary logits.

``lm_loss(model, batch)`` replaces ``model(**batch).loss``: it runs the frozen vision tower
without autograd (no LoRA there, so nothing to differentiate), the language model with the
batch's precomputed positions, and ``masked_lm_loss`` on the labelled positions only.
"""

from __future__ import annotations

import torch

from vlft.train.fast.loss import masked_lm_loss


def unwrap_causal_lm(model):
    """The ``...ForConditionalGeneration`` under PEFT / adapter wrappers (has ``.model`` and ``.lm_head``)."""
    m = model
    for _ in range(4):
        if hasattr(m, "lm_head") and hasattr(m, "model") and hasattr(m.model, "language_model"):
            return m
        m = m.get_base_model() if hasattr(m, "get_base_model") else getattr(m, "model", m)
    raise TypeError(f"{type(model).__name__}: not a Qwen-VL ForConditionalGeneration model")


def vision_is_frozen(causal_lm) -> bool:
    return not any(p.requires_grad for p in causal_lm.model.visual.parameters())


def lm_loss(model, batch: dict, chunk_size: int = 1024, vision_no_grad: bool | None = None,
            num_items: int | torch.Tensor | None = None) -> torch.Tensor:
    """Mean LM loss over labelled tokens of a padded or packed batch (positions precomputed or not; bench/lab/packing.py builds such batches)."""
    lm = unwrap_causal_lm(model)
    inner = lm.model
    if vision_no_grad is None:
        vision_no_grad = vision_is_frozen(lm)
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                  position_ids=batch.get("position_ids"), use_cache=False)
    if batch.get("position_ids") is None and batch.get("image_grid_thw") is not None:
        # the model computes M-RoPE positions itself (e.g. a batch from vlft.train.collator.SftCollator)
        mm = batch.get("mm_token_type_ids")
        kwargs["mm_token_type_ids"] = mm if mm is not None else (batch["input_ids"] == lm.config.image_token_id).int()
    if batch.get("pixel_values") is not None:
        if vision_no_grad:
            with torch.no_grad():
                feats = inner.get_image_features(batch["pixel_values"], batch["image_grid_thw"], return_dict=True)
            # image_grid_thw too: without precomputed positions the model derives M-RoPE from it
            kwargs.update(mm_encoder_outputs={"image": feats}, image_grid_thw=batch["image_grid_thw"])
        else:
            kwargs.update(pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
    hidden = inner(**kwargs).last_hidden_state
    return masked_lm_loss(hidden, lm.lm_head, batch["labels"], chunk_size=chunk_size, num_items=num_items)


def set_checkpointing(model, every: int = 1, use_reentrant: bool = False) -> int:
    """Gradient checkpointing on every ``every``-th decoder layer of the language model (0: none).

    Checkpointing trades one extra forward per layer for not storing its activations; on a
    memory budget only as many layers as needed should pay that. Vision blocks never need it
    when the tower is frozen. Returns the number of checkpointed layers.
    """
    lm = unwrap_causal_lm(model)
    if every <= 0:
        lm.gradient_checkpointing_disable()
        return 0
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    for blk in lm.model.visual.modules():
        if hasattr(blk, "gradient_checkpointing") and blk is not lm.model.visual:
            blk.gradient_checkpointing = False
    n = 0
    for i, layer in enumerate(lm.model.language_model.layers):
        layer.gradient_checkpointing = (i % every == 0)
        n += layer.gradient_checkpointing
    return n
