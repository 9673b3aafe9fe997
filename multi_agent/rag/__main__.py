"""CLI: ``python -m multi_agent.rag index [--kb DIR]`` / ``watch [--kb DIR]`` /
``query "..." [--kb DIR] [--k 5] [--no-rerank]``.

Every RagConfig field is also a flag (``--store milvus``, ``--embedder BAAI/bge-m3``, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from vlft.config import build_parser, config_from_args

from .config import RagConfig

log = logging.getLogger("multi_agent.rag")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m multi_agent.rag", description=RagConfig.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="index new/changed files of the knowledge base",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    build_parser(RagConfig, parser=ix)
    ix.add_argument("-v", "--verbose", action="store_true")
    w = sub.add_parser("watch", help="index now, then re-index changed files whenever the folder changes "
                                     "(Ctrl+C stops)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    w.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the folder")
    build_parser(RagConfig, parser=w)
    w.add_argument("-v", "--verbose", action="store_true")
    q = sub.add_parser("query", help="print the ranked chunks for a question",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("query")
    q.add_argument("--k", type=int, default=5, help="results to print")
    q.add_argument("--no-rerank", dest="rerank", action="store_false", default=argparse.SUPPRESS,
                   help="skip the cross-encoder (reranking is on by default, but only happens when a "
                        "cross-encoder is installed locally: none ships with the package)")
    build_parser(RagConfig, parser=q)
    q.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = _parser()
    ns = vars(parser.parse_args(argv))
    command, verbose = ns.pop("command"), ns.pop("verbose")
    query, k, rerank = ns.pop("query", None), ns.pop("k", 5), ns.pop("rerank", True)
    interval = ns.pop("interval", 2.0)
    cfg = config_from_args(RagConfig, ns, parser)

    from vlft.utils.logging import setup_logging

    setup_logging(verbose)
    from .kb import KnowledgeBase

    kb = KnowledgeBase(cfg)
    if command == "index":
        return _index(kb)
    if command == "watch":
        return _watch(kb, interval)
    return _query(kb, query, k, rerank)


def _index(kb) -> int:
    import threading

    from tqdm import tqdm

    from .index import display_name

    if not kb.config.kb_dir.is_dir():
        print(f"error: knowledge base folder {kb.config.kb_dir} does not exist", file=sys.stderr)
        return 2
    bar = None

    def progress(p) -> None:                       # files on the bar, chunks beside it
        nonlocal bar
        if bar is None and p.files_total:
            bar = tqdm(total=p.files_total, unit="file", desc="indexing", leave=False)
        if bar is not None:
            bar.n = p.files_done
            bar.set_postfix_str(f"{p.chunks_done}/{p.chunks_known} chunks {p.path[-40:]}", refresh=True)

    cancel = threading.Event()
    try:
        report = kb.index(progress, cancel=cancel)
    except KeyboardInterrupt:       # Ctrl+C during a commit: the previous version stays live
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    for path, reason in report.skipped:
        print(f"skipped {display_name(path)}: {reason}")
    if report.ignored:
        print(f"not documents, ignored: {len(report.ignored)} (-v lists them)")
        for path, reason in report.ignored:
            log.debug("ignored %s: %s", display_name(path), reason)
    print(f"{kb.config.index_dir}: {report.summary()}")
    return 0


def _watch(kb, interval: float) -> int:
    import _thread
    import signal
    import threading
    import time

    from .index import display_name
    from .watch import watch

    if not kb.config.kb_dir.is_dir():
        print(f"error: knowledge base folder {kb.config.kb_dir} does not exist", file=sys.stderr)
        return 2
    print(f"watching {kb.config.kb_dir} (every {interval:g}s; Ctrl+C stops)", flush=True)

    def show(report) -> None:
        for path, reason in report.skipped:
            print(f"skipped {display_name(path)}: {reason}")
        print(f"{time.strftime('%H:%M:%S')} {report.summary()}", flush=True)

    # Ctrl+C sets the stop flag instead of raising wherever the main thread happens to be (inside an
    # index pass, a C extension, a print): the pass is cancelled at its next check, keeping the files
    # it finished, and the loop returns normally. A second Ctrl+C raises as usual.
    stop = threading.Event()
    pressed: list[bool] = []

    def on_sigint(signum, frame) -> None:
        if pressed:
            raise KeyboardInterrupt
        pressed.append(True)
        # Event.set() takes the lock that the interrupted main thread may be holding inside
        # Event.wait(): set it from a new bare thread (no threading bookkeeping lock), never here.
        _thread.start_new_thread(stop.set, ())

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        watch(kb, interval=interval, stop=stop, on_report=show)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)
    print("stopped", flush=True)
    return 0


def _query(kb, query: str, k: int, rerank: bool) -> int:
    from .index import display_name
    from .kb import IndexMismatch

    if not query.strip():
        print("error: the question is empty", file=sys.stderr)
        return 2
    try:
        hits = kb.search(query, k=k, rerank=rerank)
    except IndexMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not hits:
        print("no results (is the knowledge base empty? run: python -m multi_agent.rag index)")
        return 1
    for h in hits:
        parts = " ".join(f"{n}={v:.3f}" for n, v in h.scores.items() if v is not None)
        print(f"#{h.rank} {display_name(h.citation)}  score={h.score:.4f}  [{parts}]  ({h.chunk_id} chars {h.start}-{h.end})")
        text = " ".join(h.text.split())
        print(f"    {text[:300]}{'...' if len(text) > 300 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
