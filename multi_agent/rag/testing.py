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


def build_tiny_embedder(out: str | Path, tokenizer_dir: str | Path | None = None, hidden_size: int = 128,
                        seed: int = 0) -> Path:
    """1-layer random BERT (sentence-transformers adds mean pooling) with the MiniLM tokenizer: ~50x
    cheaper than all-MiniLM-L6-v2. Its vectors carry no meaning: for speed rows and for tests that
    need a second, different embedder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .embed import resolve_model_path

    out = Path(out)
    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir or resolve_model_path("default")))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * hidden_size, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


