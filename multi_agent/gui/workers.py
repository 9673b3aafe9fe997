"""Background work for the window: loading the Assistant, answering, indexing.

Each job is a ``Worker`` (a QObject) moved to its own QThread; it reports through queued signals,
so slots run on the GUI thread. ``Runner`` keeps every thread alive until it has finished
(a QThread garbage-collected while running aborts the process).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from PyQt5.QtCore import QObject, Qt, QThread, pyqtSignal, pyqtSlot

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the chat shows it; the traceback goes to the log)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"


class Worker(QObject):
    """Runs ``fn(worker)`` once on its thread; ``fn`` may emit ``token``/``step``/``progress``."""

    token = pyqtSignal(str)
    step = pyqtSignal(object)
    progress = pyqtSignal(object)           # multi_agent.rag.schema.IndexProgress
    done = pyqtSignal(object)               # fn's return value
    failed = pyqtSignal(str)                # one-line error
    finished = pyqtSignal()                 # always last

    def __init__(self, kind: str, fn: Callable[["Worker"], Any]):
        super().__init__()
        self.kind = kind
        self.fn = fn
        self.cancel = threading.Event()

    @pyqtSlot()
    def run(self) -> None:
        try:
            result = self.fn(self)
        except BaseException as e:  # noqa: BLE001 (anything a model throws must reach the chat)
            log.debug("%s job failed", self.kind, exc_info=True)  # the chat shows the one line
            self.failed.emit(one_line(e))
        else:
            self.done.emit(result)
        finally:
            self.finished.emit()


class Runner(QObject):
    """Starts workers on threads and keeps them referenced until their thread ends."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._live: dict[QThread, Worker] = {}

    def start(self, worker: Worker) -> Worker:
        thread = QThread()
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Direct: quit() is thread-safe, and a queued call would wait for a GUI thread that may be
        # blocked in wait_all() (closing during a request).
        worker.finished.connect(thread.quit, Qt.DirectConnection)
        # A bound slot of this GUI-thread object: queued, so the reaping runs on the GUI thread.
        thread.finished.connect(self._reap)
        self._live[thread] = worker
        thread.start()
        return worker

    @pyqtSlot()
    def _reap(self) -> None:
        thread = self.sender()
        worker = self._live.pop(thread, None)
        if thread is None:
            return
        thread.wait()
        thread.deleteLater()
        if worker is not None:
            worker.deleteLater()

    def busy(self, kind: str | None = None) -> bool:
        return any(kind is None or w.kind == kind for w in self._live.values())

    def cancel_all(self) -> None:
        for w in self._live.values():
            w.cancel.set()

    def wait_all(self, ms: int = 10_000) -> bool:
        """Block until every thread ended (on close); True if they all did in time."""
        ok = True
        for thread in list(self._live):
            ok = thread.wait(ms) and ok
        return ok


# -- the three jobs -----------------------------------------------------------------------
def load_job(config: Any, kb: Any = None, store: Any = None) -> Worker:
    """``Assistant.load(config)`` off the GUI thread (frees other models, loads this one, opens the KB)."""

    def fn(w: Worker):
        from multi_agent.assistant import Assistant

        return Assistant.load(config, kb=kb, store=store)

    return Worker("load", fn)


def ask_job(assistant: Any, question: str, images: list[str], use_kb: bool,
            replace_from: int | None = None) -> Worker:
    """``assistant.ask`` with tokens and steps forwarded as signals; cancellable."""

    def fn(w: Worker):
        return assistant.ask(question, images=list(images), use_kb=use_kb, on_token=w.token.emit,
                             on_step=w.step.emit, cancel=w.cancel, replace_from=replace_from)

    return Worker("ask", fn)


def index_job(kb: Any, paths: list[str] | None = None) -> Worker:
    """Add ``paths`` to the knowledge base (or re-scan its folder when None), reporting progress per
    file and per embedding batch; ``worker.cancel`` stops it after the current batch, keeping the
    files finished so far. Returns ``(IndexReport, kb.files(), kb)`` (listing reads the index from disk,
    so it happens here too, not on the GUI thread)."""

    def fn(w: Worker):
        if paths is None:
            report = kb.index(w.progress.emit, cancel=w.cancel)
        else:
            report = kb.add_files([Path(p) for p in paths], w.progress.emit, cancel=w.cancel)
        return report, kb.files(), kb

    return Worker("index", fn)
