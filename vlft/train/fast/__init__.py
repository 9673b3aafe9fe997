"""Fast training path: labelled-token loss, precomputed positions, packing, selective checkpointing.

Small API for the training core:
- ``lm_loss(model, batch, chunk_size)``: replaces ``model(**batch).loss`` (same value).
- ``collate_padded(samples, pad_id)`` / ``pack_batch(samples, pad_id, max_tokens)``: batches with
  precomputed M-RoPE positions; packing keeps per-sample positions and no cross-sample attention.
- ``rope_positions(find_rope_index_fn(model), input_ids, image_grid_thw, image_token_id)``: per-sample positions.
- ``masked_lm_loss(hidden, lm_head, labels, chunk_size)``: chunked CE over labelled tokens only.
- ``set_checkpointing(model, every)``: checkpoint every n-th decoder layer (0 = off), vision never.
- ``compile_decoder_layers(model, memory_budget)``: compiled layers, the partitioner recomputing.
"""

from vlft.train.fast.compile import compile_available, compile_decoder_layers, uncompile_decoder_layers
from vlft.train.fast.forward import lm_loss, set_checkpointing, unwrap_causal_lm
from vlft.train.fast.loss import IGNORE_INDEX, masked_lm_loss, select_labelled
from vlft.train.fast.packing import collate_padded, find_rope_index_fn, pack_batch, plan_rows, rope_positions, to_device

__all__ = ["lm_loss", "set_checkpointing", "unwrap_causal_lm", "IGNORE_INDEX", "masked_lm_loss",
           "select_labelled", "collate_padded", "find_rope_index_fn", "pack_batch", "plan_rows",
           "rope_positions", "to_device", "compile_available", "compile_decoder_layers",
           "uncompile_decoder_layers"]
