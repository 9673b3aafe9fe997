"""Fast training path: labelled-token loss, selective checkpointing, compiled decoder layers.

Small API for the training core:
- ``lm_loss(model, batch, chunk_size)``: replaces ``model(**batch).loss`` (same value); also takes batches
  with precomputed positions (bench/lab/packing.py: padded or packed rows).
- ``masked_lm_loss(hidden, lm_head, labels, chunk_size)``: chunked CE over labelled tokens only.
- ``set_checkpointing(model, every)``: checkpoint every n-th decoder layer (0 = off), vision never.
- ``compile_decoder_layers(model, memory_budget)``: compiled layers, the partitioner recomputing.
"""

from vlft.train.fast.compile import compile_available, compile_decoder_layers, uncompile_decoder_layers
from vlft.train.fast.forward import lm_loss, set_checkpointing, unwrap_causal_lm
from vlft.train.fast.loss import IGNORE_INDEX, masked_lm_loss, select_labelled

__all__ = ["lm_loss", "set_checkpointing", "unwrap_causal_lm", "IGNORE_INDEX", "masked_lm_loss",
           "select_labelled", "compile_available", "compile_decoder_layers", "uncompile_decoder_layers"]
