"""Model/adapter picker and the other settings, as one dialog over ``Prefs``."""

from __future__ import annotations

from dataclasses import replace

from PyQt5.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                             QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                             QSpinBox, QWidget)

from multi_agent.gui.i18n import LANGUAGES, Translator
from multi_agent.gui.settings import Prefs
from multi_agent.gui.workers import Runner, Worker

BACKENDS = ("local", "openai", "scripted")


class SettingsDialog(QDialog):
    """Choose model folder, adapter, backend, knowledge-base folder and generation settings."""

    def __init__(self, prefs: Prefs, tr: Translator, parent: QWidget | None = None, api_key: str | None = None):
        super().__init__(parent)
        self.tr_ = tr
        t = tr
        self.setWindowTitle(t("set.title"))
        self.setMinimumWidth(560)
        self.backend = QComboBox()
        self.backend.addItems(BACKENDS)
        self.backend.setCurrentText(prefs.backend if prefs.backend in BACKENDS else "local")
        self.model_dir = self._path_edit(prefs.model_dir, t("set.model_hint"))
        self.adapter_dir = self._path_edit(prefs.adapter_dir, t("set.adapter_hint"))
        self.openai_url = QLineEdit(prefs.openai_url)
        self.openai_model = QComboBox()
        self.openai_model.setEditable(True)
        self.openai_model.setCurrentText(prefs.openai_model)
        self.openai_model.lineEdit().setPlaceholderText(t("set.first_listed"))
        self.api_key_edit = QLineEdit(api_key or "")
        self.api_key_edit.setEchoMode(QLineEdit.Password)
        from multi_agent.providers import keyring_available
        self.api_key_edit.setPlaceholderText(t("set.key_keyring") if keyring_available() else t("set.key_session"))
        self.models_button = QPushButton(t("set.list_models"))
        self.models_button.clicked.connect(self.list_models)
        self.embedder = QLineEdit(prefs.embedder)
        self.embedder.setPlaceholderText(t("set.embedder_hint"))
        self.reranker = QLineEdit(prefs.reranker)
        self.reranker.setPlaceholderText(t("set.reranker_hint"))
        self.check_button = QPushButton(t("set.check"))
        self.check_button.clicked.connect(self.check_models)
        self.ocr = QCheckBox()
        self.ocr.setChecked(prefs.ocr)
        self.check_result = QLabel()
        self.check_result.setWordWrap(True)
        self.runner = Runner(self)
        self.kb_dir = self._path_edit(prefs.kb_dir, "multi_agent/knowledge_base")
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 32768)
        self.max_new_tokens.setValue(prefs.max_new_tokens)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(prefs.temperature)
        self.k = QSpinBox()
        self.k.setRange(1, 50)
        self.k.setValue(prefs.k)
        self.use_rerank = QCheckBox()
        self.use_rerank.setChecked(prefs.use_rerank)
        self.language = QComboBox()
        for code, name in LANGUAGES.items():
            self.language.addItem(name, code)
        self.language.setCurrentIndex(max(0, self.language.findData(prefs.language or tr.language)))

        form = QFormLayout(self)
        form.addRow(t("set.backend"), self.backend)
        form.addRow(t("set.model_dir"), self._with_browse(self.model_dir))
        form.addRow(t("set.adapter"), self._with_browse(self.adapter_dir))
        form.addRow(t("set.openai_url"), self.openai_url)
        form.addRow(t("set.api_key"), self.api_key_edit)
        form.addRow(t("set.openai_model"), self._row(self.openai_model, self.models_button))
        form.addRow(t("set.kb_dir"), self._with_browse(self.kb_dir))
        form.addRow(t("set.embedder"), self.embedder)
        form.addRow(t("set.reranker"), self._row(self.reranker, self.check_button))
        form.addRow("", self.check_result)
        form.addRow(t("set.ocr"), self.ocr)
        form.addRow(t("set.max_new_tokens"), self.max_new_tokens)
        form.addRow(t("set.temperature"), self.temperature)
        form.addRow(t("set.k"), self.k)
        form.addRow(t("set.rerank"), self.use_rerank)
        form.addRow(t("set.language"), self.language)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.backend.currentTextChanged.connect(self._sync_enabled)
        self._prefs = prefs
        self._sync_enabled()

    def prefs(self) -> Prefs:
        """The edited copy (the original is untouched until the caller saves it)."""
        return replace(
            self._prefs, backend=self.backend.currentText(), model_dir=self.model_dir.text().strip(),
            adapter_dir=self.adapter_dir.text().strip(), openai_url=self.openai_url.text().strip(),
            openai_model=self.openai_model.currentText().strip(), kb_dir=self.kb_dir.text().strip(),
            embedder=self.embedder.text().strip(), reranker=self.reranker.text().strip(), ocr=self.ocr.isChecked(),
            max_new_tokens=self.max_new_tokens.value(), temperature=self.temperature.value(),
            k=self.k.value(), use_rerank=self.use_rerank.isChecked(),
            language=self.language.currentData())

    def api_key(self) -> str:
        return self.api_key_edit.text().strip()

    # checks run on a worker thread: a server that does not answer never freezes the dialog
    def list_models(self) -> None:
        """Fill the model box with what the server lists (or say in one line why not)."""
        url, key = self.openai_url.text().strip(), self.api_key() or None
        self.check_result.setText(self.tr_("set.asking", url=url))

        def fn(w: Worker):
            from multi_agent.providers import server_models
            return server_models(url, key)

        self._run(fn, self._on_models)

    def _on_models(self, names: list[str]) -> None:
        current = self.openai_model.currentText()
        self.openai_model.clear()
        self.openai_model.addItems(names)
        self.openai_model.setCurrentText(current if current in names else names[0])
        self.check_result.setText("✓ " + self.tr_("set.models_found", n=len(names)))

    def check_models(self) -> None:
        """Load the chosen embedder and reranker; one line each, ✓ or ✗."""
        embedder, reranker = self.embedder.text().strip(), self.reranker.text().strip()
        self.check_result.setText(self.tr_("set.checking"))

        def fn(w: Worker):
            from multi_agent.providers import check_embedder, check_reranker
            lines = []
            for check, name in ((check_embedder, embedder), (check_reranker, reranker or "BAAI/bge-reranker-base")):
                try:
                    lines.append("✓ " + check(name))
                except Exception as e:  # noqa: BLE001 (each result is one line)
                    lines.append(f"✗ {' '.join(str(e).split())}")
            return "\n".join(lines)

        self._run(fn, self.check_result.setText)

    def _run(self, fn, on_done) -> None:
        worker = Worker("check", fn)
        worker.done.connect(on_done)
        worker.failed.connect(lambda msg: self.check_result.setText("✗ " + msg))
        self.runner.start(worker)

    def done(self, result: int) -> None:  # noqa: D102 (closing: let running checks end first)
        self.runner.wait_all(30_000)
        super().done(result)

    def _row(self, *widgets: QWidget) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        for i, w in enumerate(widgets):
            row.addWidget(w, 1 if i == 0 else 0)
        return box

    def _path_edit(self, value: str, hint: str) -> QLineEdit:
        edit = QLineEdit(value)
        edit.setPlaceholderText(hint)
        edit.setClearButtonEnabled(True)
        return edit

    def _with_browse(self, edit: QLineEdit) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        button = QPushButton(self.tr_("set.browse"))
        button.clicked.connect(lambda: self._browse(edit))
        row.addWidget(edit, 1)
        row.addWidget(button)
        return box

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.tr_("set.title"), edit.text())
        if folder:
            edit.setText(folder)

    def _sync_enabled(self) -> None:
        local = self.backend.currentText() == "local"
        remote = self.backend.currentText() == "openai"
        self.model_dir.setEnabled(local)
        self.adapter_dir.setEnabled(local)
        self.openai_url.setEnabled(remote)
        self.openai_model.setEnabled(remote)
        self.api_key_edit.setEnabled(remote)
        self.models_button.setEnabled(remote)
