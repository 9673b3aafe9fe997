"""Settings kept between runs: a typed view over QSettings (an INI file).

Tests and scripts pass their own file (``AppSettings(path)``) or set $VLFT_ASSISTANT_SETTINGS, so the
user's own settings are never read or written by them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from PyQt5.QtCore import QByteArray, QSettings

ORGANIZATION = "qwen3-vl-moelora"
APPLICATION = "assistant"
ENV_FILE = "VLFT_ASSISTANT_SETTINGS"


@dataclass
class Prefs:
    """What the user chose; empty strings mean "the default"."""

    language: str = ""          # "en" | "zh"; "" -> system locale
    backend: str = "local"      # Assistant chat-model backend: local | openai | scripted
    model_dir: str = ""         # "" -> embedded tiny Qwen3-VL
    adapter_dir: str = ""       # optional LoRA adapter folder
    openai_url: str = "http://localhost:8000/v1"
    openai_model: str = ""
    kb_dir: str = ""            # "" -> multi_agent/knowledge_base
    embedder: str = ""          # "" -> the one the index was built with (else all-MiniLM-L6-v2)
    reranker: str = ""          # "" -> BAAI/bge-reranker-base if on disk; "none" -> no reranking
    ocr: bool = False           # read images and scanned PDF pages in the knowledge base with OCR
    # The API key is never kept here: the OS keyring holds it (multi_agent.providers).
    use_kb: bool = True
    # Same defaults as AssistantConfig (a test keeps them equal).
    max_new_tokens: int = 512
    temperature: float = 0.0
    k: int = 5
    use_rerank: bool = True
    last_dir: str = ""          # where the last file dialog was


class AppSettings:
    """Load/save ``Prefs`` plus window geometry in one QSettings store."""

    def __init__(self, path: str | Path | None = None):
        path = path or os.environ.get(ENV_FILE)
        if path:
            self.qsettings = QSettings(str(path), QSettings.IniFormat)
        else:
            self.qsettings = QSettings(QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)

    @property
    def path(self) -> str:
        return self.qsettings.fileName()

    def load(self) -> Prefs:
        prefs = Prefs()
        for f in fields(Prefs):
            raw = self.qsettings.value(f"prefs/{f.name}")
            if raw is None:
                continue
            try:
                setattr(prefs, f.name, _convert(raw, type(getattr(prefs, f.name))))
            except (TypeError, ValueError):
                pass  # a hand-edited bad value falls back to the default
        return prefs

    def save(self, prefs: Prefs) -> None:
        for f in fields(Prefs):
            self.qsettings.setValue(f"prefs/{f.name}", getattr(prefs, f.name))
        self.qsettings.sync()

    def save_window(self, geometry: QByteArray, state: dict[str, QByteArray]) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        for name, value in state.items():
            self.qsettings.setValue(f"window/{name}", value)
        self.qsettings.sync()

    def window_value(self, name: str) -> QByteArray | None:
        value = self.qsettings.value(f"window/{name}")
        return value if isinstance(value, QByteArray) else None


def _convert(raw, kind):
    # INI files give back strings; native stores give back typed values.
    if kind is bool:
        return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
    return kind(raw)
