"""Knowledge: the hybrid BM25 + vector retriever with cross-encoder rerank (multi_agent.rag)."""

from __future__ import annotations

from typing import Any, Sequence

from multi_agent.agents.trace import cite_label

EVIDENCE_CHARS = 900   # per chunk in the prompt: keeps 5 chunks + image well inside an 8 GB budget


def retrieve(kb: Any, query: str, k: int = 5, rerank: bool = True) -> list[Any]:
    """``kb.search`` hits, best first; evidence[i] is cited as [i+1]."""
    return list(kb.search(query, k=k, rerank=rerank))


def format_evidence(hits: Sequence[Any], limit: int = EVIDENCE_CHARS) -> str:
    blocks = []
    for i, h in enumerate(hits, 1):
        text = " ".join(str(getattr(h, "text", "")).split())
        if len(text) > limit:
            text = text[:limit] + " ..."
        blocks.append(f"[{i}] ({cite_label(h)})\n{text}")
    return "\n\n".join(blocks)
