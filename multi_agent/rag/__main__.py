"""CLI: ``python -m multi_agent.rag index [--kb DIR]`` / ``query "..." [--kb DIR] [--k 5] [--no-rerank]``.

Every RagConfig field is also a flag (``--store milvus``, ``--embedder BAAI/bge-m3``, ...).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from vlft.config import build_parser, config_from_args

from .config import RagConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m multi_agent.rag", description=RagConfig.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="index new/changed files of the knowledge base",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    build_parser(RagConfig, parser=ix)
    ix.add_argument("-v", "--verbose", action="store_true")
    q = sub.add_parser("query", help="print the ranked chunks for a question",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("query")
    q.add_argument("--k", type=int, default=5, help="results to print")
    q.add_argument("--no-rerank", dest="rerank", action="store_false", help="skip the cross-encoder")
    build_parser(RagConfig, parser=q)
    q.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = _parser()
    ns = vars(parser.parse_args(argv))
    command, verbose = ns.pop("command"), ns.pop("verbose")
    query, k, rerank = ns.pop("query", None), ns.pop("k", 5), ns.pop("rerank", True)
    cfg = config_from_args(RagConfig, ns, parser)

    from vlft.utils.logging import setup_logging

    setup_logging(verbose)
    from .kb import KnowledgeBase

    kb = KnowledgeBase(cfg)
    if command == "index":
        return _index(kb)
    return _query(kb, query, k, rerank)


def _index(kb) -> int:
    from tqdm import tqdm

    if not kb.config.kb_dir.is_dir():
        print(f"error: knowledge base folder {kb.config.kb_dir} does not exist", file=sys.stderr)
        return 2
    bar = None

    def progress(done: int, total: int, path: str) -> None:
        nonlocal bar
        if bar is None and total:
            bar = tqdm(total=total, unit="file", desc="indexing", leave=False)
        if bar is not None:
            bar.n = done
            bar.set_postfix_str(path[-40:], refresh=True)

    report = kb.index(progress)
    if bar is not None:
        bar.close()
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    print(f"{kb.config.index_dir}: {report.summary()}")
    return 0


def _query(kb, query: str, k: int, rerank: bool) -> int:
    hits = kb.search(query, k=k, rerank=rerank)
    if not hits:
        print("no results (is the knowledge base empty? run: python -m multi_agent.rag index)")
        return 1
    for h in hits:
        parts = " ".join(f"{n}={v:.3f}" for n, v in h.scores.items() if v is not None)
        print(f"#{h.rank} {h.citation}  score={h.score:.4f}  [{parts}]  ({h.chunk_id} chars {h.start}-{h.end})")
        text = " ".join(h.text.split())
        print(f"    {text[:300]}{'...' if len(text) > 300 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
