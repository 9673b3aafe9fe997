"""Language-model loss computed only where there are labels.

A captioning sample is ~100 tokens of which ~21 are labelled (caption + ``<|im_end|>``).
The plain ``model(labels=...)`` path projects every position onto the 151,936-word
vocabulary and upcasts to fp32: 100 x 152k x 4 B = 61 MB per sample forward, the same
again for its gradient, i.e. ~2-3 GB at batch 16. Here the hidden states of the labelled
positions are gathered first, and the vocabulary projection + cross-entropy run in chunks
whose fp32 logits are recomputed in backward instead of stored.

The value equals transformers' ``ForCausalLMLoss`` (mean over labelled tokens, labels
shifted by one) up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vlft.data.vocab import IGNORE_INDEX  # noqa: E402 (one definition)


def _chunk_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  targets: torch.Tensor) -> torch.Tensor:
    # hidden [n, D], weight [V, D] -> fp32 logits [n, V] -> summed CE (scalar).
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def select_labelled(hidden: torch.Tensor, labels: torch.Tensor,
                    ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states that predict a label, and those labels (next-token shift applied).

    hidden [B, L, D], labels [B, L] -> ([N, D], [N]) with N = labelled positions after the shift.
    """
    shift_labels = labels[:, 1:]
    keep = shift_labels != ignore_index                      # [B, L-1]
    return hidden[:, :-1][keep], shift_labels[keep]


def masked_lm_loss(hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor,
                   chunk_size: int = 1024, ignore_index: int = IGNORE_INDEX,
                   num_items: int | torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions, logits only for those positions.

    ``chunk_size`` labelled tokens are projected at a time (peak extra memory
    ~ chunk_size x vocab x 4 B, 620 MB at 1024 for Qwen3-VL); 0 means one chunk without
    recomputation. ``num_items`` overrides the divisor (for gradient accumulation across
    micro-batches with a global token count).
    """
    h, y = select_labelled(hidden, labels, ignore_index)
    weight = lm_head.weight
    bias = getattr(lm_head, "bias", None)
    n = y.numel()
    denom = num_items if num_items is not None else max(n, 1)
    if n == 0:
        return hidden.sum() * 0.0
    if chunk_size <= 0 or n <= chunk_size:
        total = _chunk_ce_sum(h, weight, bias, y)
    else:
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, n, chunk_size):
            sl = slice(start, start + chunk_size)
            # Recompute the chunk's fp32 logits in backward rather than keep them all alive.
            total = total + checkpoint(_chunk_ce_sum, h[sl], weight, bias, y[sl], use_reentrant=False)
    return total / denom
