"""Batches for the fast path: padded with precomputed M-RoPE positions, or packed.

Qwen3-VL positions are 3-D (temporal, height, width) for image tokens ("M-RoPE") and
computed by ``get_rope_index`` with a Python loop and host syncs per row. Here they are
computed once per sample when the sample is prepared (``rope_positions``), then reused.

Packing puts several samples in one row. Each sample keeps its own positions (starting at
0), and the text-position row that transformers uses to build the attention mask restarts
at 0 at every sample boundary: ``create_causal_mask`` turns that into a block-diagonal
causal mask (SDPA) or per-sample varlen attention (flash-attention), so no token attends
across samples. Position ids passed to the model are therefore [4, rows, L]: row 0 the
per-sample text positions, rows 1-3 the M-RoPE positions.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from vlft.train.fast.loss import IGNORE_INDEX

Sample = dict[str, Any]  # input_ids [L], labels [L], position_ids [3, L], pixel_values [P, C], image_grid_thw [n, 3]


def find_rope_index_fn(model) -> Callable:
    """The ``get_rope_index`` of the Qwen-VL inner model, through any PEFT/adapter wrappers."""
    for module in model.modules():
        fn = getattr(module, "get_rope_index", None)
        if callable(fn) and hasattr(module, "language_model"):
            return fn
    raise TypeError(f"{type(model).__name__}: no Qwen-VL get_rope_index found (not a Qwen-VL model?)")


def rope_positions(rope_index_fn: Callable, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None,
                   image_token_id: int) -> torch.Tensor:
    """M-RoPE positions [3, L] of one unpadded sample (same values the model computes itself)."""
    ids = input_ids.view(1, -1)
    mm = (ids == image_token_id).int()
    pos, _ = rope_index_fn(ids, mm_token_type_ids=mm, image_grid_thw=image_grid_thw)
    return pos[:, 0]


def _cat_vision(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    with_img = [s for s in samples if s.get("pixel_values") is not None]
    if not with_img:
        return {}
    return {"pixel_values": torch.cat([s["pixel_values"] for s in with_img]),
            "image_grid_thw": torch.cat([s["image_grid_thw"] for s in with_img])}


def collate_padded(samples: Sequence[Sample], pad_token_id: int, pad_to_multiple: int = 1) -> dict:
    """Right-padded batch with attention_mask and precomputed M-RoPE positions [3, B, L].

    Samples without ``position_ids`` give a batch without them (the model then computes them).
    """
    longest = max(s["input_ids"].numel() for s in samples)
    L = -(-longest // pad_to_multiple) * pad_to_multiple
    B = len(samples)
    input_ids = torch.full((B, L), pad_token_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    position_ids = torch.zeros((3, B, L), dtype=torch.long)
    for i, s in enumerate(samples):
        n = s["input_ids"].numel()
        input_ids[i, :n] = s["input_ids"]
        labels[i, :n] = s["labels"]
        attention_mask[i, :n] = 1
        if "position_ids" in s:
            position_ids[:, i, :n] = s["position_ids"]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, **_cat_vision(samples)}
    if all("position_ids" in s for s in samples):
        batch["position_ids"] = position_ids
    return batch


def plan_rows(lengths: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Greedy first-fit of sample indices into rows of at most ``max_tokens`` (None: one row).

    Sample order inside the batch is kept row by row so images stay in placeholder order.
    """
    if max_tokens is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    used: list[int] = []
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"sample {i}: {n} tokens exceed the packing row length {max_tokens}")
        for r, u in enumerate(used):
            if u + n <= max_tokens:
                rows[r].append(i)
                used[r] += n
                break
        else:
            rows.append([i])
            used.append(n)
    return rows


def pack_batch(samples: Sequence[Sample], pad_token_id: int, max_tokens: int | None = None,
               pad_to_multiple: int = 1) -> dict:
    """Pack samples into rows of at most ``max_tokens`` tokens (one row if None).

    Returns input_ids/labels [R, L], position_ids [4, R, L] and the images in placeholder
    order. No attention_mask: the per-sample text positions define the block-diagonal mask.
    Row tails are padding that forms its own segment (labels ignored).
    """
    rows = plan_rows([s["input_ids"].numel() for s in samples], max_tokens)
    longest = max(sum(samples[i]["input_ids"].numel() for i in row) for row in rows)
    L = -(-longest // pad_to_multiple) * pad_to_multiple
    R = len(rows)
    input_ids = torch.full((R, L), pad_token_id, dtype=torch.long)
    labels = torch.full((R, L), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((4, R, L), dtype=torch.long)
    ordered: list[Sample] = []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            s = samples[i]
            n = s["input_ids"].numel()
            input_ids[r, at:at + n] = s["input_ids"]
            labels[r, at:at + n] = s["labels"]
            labels[r, at] = IGNORE_INDEX  # never predict a sample's first token from the previous sample
            position_ids[0, r, at:at + n] = torch.arange(n)
            position_ids[1:, r, at:at + n] = s["position_ids"]
            ordered.append(s)
            at += n
        if at < L:  # padding segment: positions restart at 0 so it is masked off as its own block
            position_ids[:, r, at:] = torch.arange(L - at)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, **_cat_vision(ordered)}


def to_device(batch: dict, device, non_blocking: bool = True) -> dict:
    return {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in batch.items()}
