"""*Make training data*: the knowledge-base panel's selected documents -> ``vlft.data.expand.Expander``
on a worker thread -> a preview table to accept or drop pairs -> save (and append to a training file).

The dialog only displays and forwards: all logic is ``Expander`` (the same class expand_data.py runs).
``install_expand_button(window)`` is the whole hook into the main window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
                             QLineEdit, QListWidget, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem,
                             QVBoxLayout, QWidget)

from multi_agent.gui.i18n import Translator
from multi_agent.gui.workers import Runner, Worker


class ExpandDialog(QDialog):
    """Sources -> collect (worker thread, progress) -> preview with a Keep box per pair -> save."""

    saved = pyqtSignal(object)      # the ExpandReport

    def __init__(self, sources: list[str], output: str, tr: Translator | None = None, train_json: str = "",
                 model: str = "", adapter: str = "", generator: Any = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.tr_ = tr or Translator("en")
        self.adapter = adapter or None
        self._generator = generator       # an already built Generator (tests, or the app's loaded model)
        self._runner = Runner(self)
        self._expander = None
        self._result = None
        self.setWindowTitle(self.tr_("expand.title"))
        self.resize(900, 600)

        self.sources = QListWidget()
        self.sources.addItems(sources)
        self.gen_mode = QComboBox()
        self.gen_mode.addItem(self.tr_("expand.gen.none"), "none")
        self.gen_mode.addItem(self.tr_("expand.gen.local"), "local")
        self.gen_mode.setEditable(False)
        self.url = QLineEdit()
        self.url.setPlaceholderText(self.tr_("expand.url") + "  http://localhost:8000/v1")
        self.model = QLineEdit(model)
        self.output = QLineEdit(output)
        self.train_json = QLineEdit(train_json)
        form = QFormLayout()
        form.addRow(self.tr_("expand.generator"), self.gen_mode)
        form.addRow("", self.url)
        form.addRow(self.tr_("expand.model"), self.model)
        form.addRow(self.tr_("expand.output"), self.output)
        form.addRow(self.tr_("expand.train"), self.train_json)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels([self.tr_("expand.col.keep"), self.tr_("expand.col.kind"),
                                              self.tr_("expand.col.question"), self.tr_("expand.col.answer"),
                                              self.tr_("expand.col.source")])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        for col, mode in enumerate((QHeaderView.ResizeToContents, QHeaderView.ResizeToContents,
                                    QHeaderView.Stretch, QHeaderView.Stretch, QHeaderView.ResizeToContents)):
            header.setSectionResizeMode(col, mode)

        self.run_button = QPushButton(self.tr_("expand.run"))
        self.save_button = QPushButton(self.tr_("expand.save"))
        self.save_button.setEnabled(False)
        self.close_button = QPushButton(self.tr_("expand.close"))
        self.run_button.clicked.connect(self.run)
        self.save_button.clicked.connect(self.save)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.run_button, self.save_button, self.close_button):
            buttons.addWidget(b)

        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(self.tr_("expand.sources")))
        lay.addWidget(self.sources, 1)
        lay.addLayout(form)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.table, 3)
        lay.addLayout(buttons)
        if not sources:
            self.status.setText(self.tr_("expand.no_sources"))
            self.run_button.setEnabled(False)

    # -- config --------------------------------------------------------------------------------------
    def config(self):
        from vlft.data.expand import ExpandConfig

        url = self.url.text().strip()
        generator = url if url else self.gen_mode.currentData()
        train = self.train_json.text().strip()
        return ExpandConfig(source=[self.sources.item(i).text() for i in range(self.sources.count())],
                            output=Path(self.output.text().strip() or "output/expand"), generator=generator,
                            model=self.model.text().strip() or None, adapter=self.adapter,
                            to="train" if train else "none",
                            train_json=Path(train) if train else None)

    # -- run ------------------------------------------------------------------------------------------
    def _busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and self._result is not None)
        self.progress.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)

    def _on_progress(self, report: tuple[int, int, str]) -> None:
        done, total, phase = report
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))
        self.status.setText(self.tr_("expand.working", phase=phase, done=done, total=total))

    def run(self) -> None:
        """Collect on a worker thread; the table fills when it is done."""
        from vlft.config import ConfigError
        from vlft.data.expand import Expander

        try:
            cfg = self.config()
        except (ConfigError, ValueError) as e:
            self.status.setText(str(e))
            return
        self._result = None
        generator = self._generator or self._local_generator(cfg)

        def fn(w: Worker):
            def progress(phase: str, done: int, total: int, note: str) -> None:
                if w.cancel.is_set():
                    self._expander.cancel()
                w.progress.emit((int(done), int(total), phase))  # the worker's progress carries one object
            self._expander = Expander(cfg, generator=generator, progress=progress)
            return self._expander.collect()

        worker = Worker("expand", fn)
        worker.progress.connect(self._on_progress)
        worker.done.connect(self._show)
        worker.failed.connect(self._failed)
        worker.finished.connect(lambda: self._busy(False))
        self._busy(True)
        self._runner.start(worker)

    @staticmethod
    def _local_generator(cfg):
        """The app's shared model for "local" (loaded once per process, on the worker thread), else None."""
        if cfg.generator != "local":
            return None
        from multi_agent.llm.local import shared_generator
        from vlft.data.expand.generate import LocalGenerator

        return LocalGenerator(cfg.model, cfg.adapter, cfg.batch_size, cfg.max_new_tokens,
                              loader=lambda: shared_generator(cfg.model, cfg.adapter))

    def _failed(self, line: str) -> None:
        self.status.setText(line)

    def _show(self, result) -> None:
        self._result = result
        self.table.setRowCount(len(result.pairs))
        for row, p in enumerate(result.pairs):
            keep = QTableWidgetItem()
            keep.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
            keep.setCheckState(Qt.Checked)
            self.table.setItem(row, 0, keep)
            for col, text in enumerate((p.kind, p.question, p.answer, f"{Path(p.source).name}"
                                        + (f" p.{p.page}" if p.page else "")), start=1):
                item = QTableWidgetItem(text)
                item.setToolTip(p.image or p.source)
                self.table.setItem(row, col, item)
        self.table.resizeRowsToContents()
        self.status.setText(self.tr_("expand.found", n=len(result.pairs), removed=sum(result.removed.values()),
                                   skipped=len(result.skipped)))

    def accepted_pairs(self) -> list:
        if self._result is None:
            return []
        return [p for row, p in enumerate(self._result.pairs)
                if self.table.item(row, 0).checkState() == Qt.Checked]

    def save(self) -> None:
        """Write the kept pairs (and append them to the training file) on a worker thread."""
        if self._result is None or self._expander is None:
            return
        result, pairs, expander = self._result, self.accepted_pairs(), self._expander
        worker = Worker("expand-save", lambda w: expander.save(result, pairs))
        worker.done.connect(self._saved)
        worker.failed.connect(self._failed)
        worker.finished.connect(lambda: self._busy(False))
        self._busy(True)
        self._runner.start(worker)

    def _saved(self, report) -> None:
        self.status.setText(self.tr_("expand.saved", n=report.written, path=report.outputs.get("train", "")))
        self.saved.emit(report)

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        self._runner.cancel_all()
        if self._expander is not None:
            self._expander.cancel()
        self._runner.wait_all(30_000)
        super().closeEvent(event)


def selected_documents(panel) -> list[str]:
    """Absolute paths of the files selected in the knowledge-base panel (all of them if none is)."""
    files = panel.file_items()  # the tree's file rows (folders are rows too, without a path)
    chosen = [it for it in files if it.isSelected()] or files
    base = Path(panel.kb_dir or ".")
    return [str(base / str(it.data(0, Qt.UserRole))) for it in chosen]


def install_expand_button(window) -> QPushButton:
    """Add "Make training data…" under the knowledge-base panel's file list (the whole hook)."""
    from vlft.paths import REPO_DIR

    panel = window.kb_panel
    panel.files.setSelectionMode(QAbstractItemView.ExtendedSelection)
    tr = getattr(window, "tr_", None) or Translator("en")
    button = QPushButton(tr("expand.button"))
    panel.layout().addWidget(button)

    def open_dialog() -> None:
        prefs = getattr(window, "prefs", None)
        dlg = ExpandDialog(selected_documents(panel), str(REPO_DIR / "output" / "expand"), tr,
                           model=str(getattr(prefs, "model_dir", "") or ""),
                           adapter=str(getattr(prefs, "adapter_dir", "") or ""), parent=window)
        dlg.setAttribute(Qt.WA_DeleteOnClose)
        dlg.show()
        window.expand_dialog = dlg
    button.clicked.connect(open_dialog)
    window.expand_button = button
    return button
