#!/usr/bin/env python
"""How well does the support score (share of an answer's content words found in its source chunk)
separate grounded answers from invented ones? Measured on this project's own documents (not a test).

For every chunk of docs/*.md, README.md and the sample knowledge base (English and Chinese):
  grounded     a sentence of the chunk (an answer that restates the chunk)
  reworded     the same sentence with a third of its words replaced by words of another document
               (an answer that paraphrases, or half-invents)
  invented     a sentence of another document (on-topic vocabulary, not from this chunk)
and prints, per threshold, the share of each kept by the support filter.

    OMP_NUM_THREADS=1 .venv/bin/python bench/expand_support.py
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/expand_support.py`: the same as `python -m bench.expand_support`
    os.execve(sys.executable, [sys.executable, "-m", "bench.expand_support", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

from multi_agent.rag.chunking import chunk_text, sentence_spans  # noqa: E402
from vlft.data.expand.curate import support  # noqa: E402
from vlft.paths import REPO_DIR  # noqa: E402


def sentences(text: str) -> list[str]:
    out = []
    for s in sentence_spans(text):
        t = " ".join(text[s.start:s.end].split())
        if 30 <= len(t) <= 300 and not t.startswith(("|", "#", "```", "-")):
            out.append(t)
    return out


def main() -> None:
    rng = random.Random(0)
    files = sorted((REPO_DIR / "docs").glob("*.md")) + [REPO_DIR / "README.md"] + \
        sorted((REPO_DIR / "multi_agent" / "knowledge_base").glob("*.*"))
    docs = {f.name: f.read_text(encoding="utf-8") for f in files if f.is_file()}
    chunks = [(name, text[s.start:s.end]) for name, text in docs.items() for s in chunk_text(text, 1200, 100)]
    pool = {name: sentences(text) for name, text in docs.items()}
    words = {name: re.findall(r"\w+", text) for name, text in docs.items()}
    scores: dict[str, list[float]] = {"grounded": [], "reworded": [], "invented": []}
    for name, chunk in chunks:
        own = sentences(chunk)
        others = [n for n in docs if n != name and pool[n]]
        if not own or not others:
            continue
        s = rng.choice(own)
        other = rng.choice(others)
        toks = s.split()
        for i in rng.sample(range(len(toks)), len(toks) // 3):
            toks[i] = rng.choice(words[other])
        scores["grounded"].append(support(s, chunk))
        scores["reworded"].append(support(" ".join(toks), chunk))
        scores["invented"].append(support(rng.choice(pool[other]), chunk))
    n = len(scores["grounded"])
    print(f"{n} chunks from {len(docs)} documents")
    print("threshold | grounded kept | reworded kept | invented kept")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        row = [sum(v >= t for v in scores[k]) / len(scores[k]) for k in ("grounded", "reworded", "invented")]
        print(f"{t:.1f} | " + " | ".join(f"{r:.0%}" for r in row))


if __name__ == "__main__":
    main()
