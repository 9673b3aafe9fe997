"""Model/adapter picker and the other settings, as one dialog over ``Prefs``."""

from __future__ import annotations

from dataclasses import replace

from PyQt5.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                             QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton,
                             QSpinBox, QWidget)

from multi_agent.gui.i18n import LANGUAGES, Translator
from multi_agent.gui.settings import Prefs

BACKENDS = ("local", "openai", "scripted")


class SettingsDialog(QDialog):
    """Choose model folder, adapter, backend, knowledge-base folder and generation settings."""

    def __init__(self, prefs: Prefs, tr: Translator, parent: QWidget | None = None):
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
        self.openai_model = QLineEdit(prefs.openai_model)
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
        form.addRow(t("set.openai_model"), self.openai_model)
        form.addRow(t("set.kb_dir"), self._with_browse(self.kb_dir))
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
            openai_model=self.openai_model.text().strip(), kb_dir=self.kb_dir.text().strip(),
            max_new_tokens=self.max_new_tokens.value(), temperature=self.temperature.value(),
            k=self.k.value(), use_rerank=self.use_rerank.isChecked(),
            language=self.language.currentData())

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
