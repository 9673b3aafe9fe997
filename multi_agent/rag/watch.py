"""Keep an index in line with its folder: ``python -m multi_agent.rag watch [--kb DIR]``.

Polls the folder's file list (names, sizes, modification times: no file is read) every
``interval`` seconds; when it changes and then stays the same for ``settle`` seconds (a copy in
progress is not indexed half-written), runs the incremental index, which re-embeds only what
changed. Polling needs no extra package and works the same on every OS and network drive.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from .schema import IndexReport

Fingerprint = frozenset


def fingerprint(kb_dir: Path, index_dir: Path) -> Fingerprint:
    """(path, size, mtime) of every file under kb_dir, the index folder and hidden folders left out."""
    out = set()
    index_dir = index_dir.resolve()
    for root, dirs, names in os.walk(kb_dir):
        root_p = Path(root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (root_p / d).resolve() != index_dir]
        for name in names:
            try:
                st = (root_p / name).stat()
            except OSError:
                continue
            out.add((str(root_p / name), st.st_size, st.st_mtime_ns))
    return frozenset(out)


def watch(kb, interval: float = 2.0, settle: float = 1.0, stop: threading.Event | None = None,
          on_report: Callable[[IndexReport], None] | None = None, progress=None) -> int:
    """Index now, then again after every settled change, until ``stop`` is set. Returns the runs."""
    stop = stop or threading.Event()
    cfg = kb.config
    runs = 0
    seen = None
    while not stop.is_set():
        current = fingerprint(cfg.kb_dir, cfg.index_dir)
        if current != seen:
            if seen is not None:                    # wait until the folder stops changing
                while not stop.wait(settle):
                    again = fingerprint(cfg.kb_dir, cfg.index_dir)
                    if again == current:
                        break
                    current = again
                if stop.is_set():
                    break
            report = kb.index(progress, cancel=stop)
            runs += 1
            seen = current
            if on_report is not None:
                on_report(report)
        stop.wait(interval)
    return runs
