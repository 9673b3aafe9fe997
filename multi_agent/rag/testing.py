"""A tiny local cross-encoder for tests and benchmarks: no reranker weights can be downloaded offline."""

from __future__ import annotations

from pathlib import Path


def build_tiny_cross_encoder(out: str | Path, tokenizer_dir: str | Path, hidden_size: int = 32,
                             num_layers: int = 1, seed: int = 0) -> Path:
    """Save a random ``BertForSequenceClassification`` (num_labels=1) with a real WordPiece tokenizer to
    ``out``; ``sentence_transformers.CrossEncoder(out)`` loads it like bge-reranker."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = Path(out)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=512,
                     num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
