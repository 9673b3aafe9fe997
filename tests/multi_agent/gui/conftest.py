"""Fixtures for the desktop-assistant window: a temp settings file, a small knowledge base,
the real Assistant (scripted or tiny local model) and a window that never opens real apps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5.QtCore import QPoint, QPointF, Qt, QMimeData, QUrl  # noqa: E402
from PyQt5.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PyQt5.QtWidgets import QApplication, QWidget  # noqa: E402

from multi_agent.assistant import Assistant, AssistantConfig  # noqa: E402
from multi_agent.gui.settings import AppSettings, Prefs  # noqa: E402
from multi_agent.gui.window import MainWindow  # noqa: E402
from multi_agent.llm.scripted import ScriptedChatModel  # noqa: E402

ANSWER_MD = ("MoE-LoRA routes each token to a few **LoRA experts** [1]:\n\n"
             "- a router scores the experts per token\n"
             "- only the top experts are added to the frozen weights\n\n"
             "For 8 GB GPUs the guide recommends 4-bit QLoRA with rank 8 [2].")

KB_DOCS = {
    "moelora.md": ("# MoE-LoRA\n\nMoE-LoRA mixes several LoRA experts. A router scores the experts "
                   "for every token and only the top experts are added to the frozen base weights. "
                   "This keeps memory low while letting experts specialise.\n"),
    "training-guide.txt": ("Training guide. On an 8 GB GPU, fine-tune Qwen3-VL with 4-bit QLoRA, "
                           "rank 8, learning rate 1e-4 and gradient accumulation 8.\n"),
}


@pytest.fixture
def settings_file(tmp_path) -> Path:
    """A temp INI file: tests never touch the user's own settings."""
    return tmp_path / "assistant-settings.ini"


@pytest.fixture
def gui_settings(settings_file, kb_dir) -> AppSettings:
    s = AppSettings(settings_file)
    s.save(Prefs(language="en", backend="scripted", kb_dir=str(kb_dir), use_rerank=False))
    return s


@pytest.fixture
def kb_dir(tmp_path) -> Path:
    d = tmp_path / "kb"
    d.mkdir()
    for name, text in KB_DOCS.items():
        (d / name).write_text(text, encoding="utf-8")
    return d


@pytest.fixture
def make_assistant(kb_dir, tmp_path) -> Callable[..., Assistant]:
    """The real Assistant over the temp knowledge base, with a scripted (or given) chat model."""

    def make(chat_model: Any = None, **config: Any) -> Assistant:
        cfg = dict(backend="scripted", kb_dir=kb_dir, reports_dir=tmp_path / "reports", use_rerank=False, k=3)
        cfg.update(config)
        return Assistant(AssistantConfig(**cfg), chat_model=chat_model)

    return make


def scripted(answer: str = ANSWER_MD, token_delay: float = 0.0, **rules: Any) -> ScriptedChatModel:
    """The shipped scripted backend with a fixed Responder answer (other agents: built-in demo)."""
    return ScriptedChatModel(rules={"Responder": answer, **rules}, token_delay=token_delay)


class Opened(list):
    """Stands in for QDesktopServices.openUrl: records URLs instead of launching apps."""

    def __call__(self, url: QUrl) -> bool:
        self.append(url)
        return True


@pytest.fixture
def opened() -> Opened:
    return Opened()


@pytest.fixture
def make_window(qtbot, gui_settings, opened) -> Callable[..., MainWindow]:
    def make(assistant: Any = None, settings: AppSettings | None = None, wait: bool = True,
             **kw: Any) -> MainWindow:
        w = MainWindow(settings or gui_settings, assistant=assistant, opener=opened, **kw)
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        if wait:
            wait_idle(qtbot, w)
        return w

    return make


def wait_idle(qtbot, window: MainWindow, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not window.busy, timeout=timeout)


def ask(qtbot, window: MainWindow, question: str, timeout: int = 60_000) -> None:
    """Type, press Enter, wait for the answer."""
    window.input.setPlainText(question)
    qtbot.keyClick(window.input, Qt.Key_Return)
    assert window.busy, "Enter did not start a request"
    wait_idle(qtbot, window, timeout)


def drop_files(target: QWidget, paths: list[Path]) -> None:
    """A real drag-enter + drop of local files onto ``target``."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPoint(target.width() // 2, target.height() // 2)
    enter = QDragEnterEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted(), f"{type(target).__name__} refused the drag"
    drop = QDropEvent(QPointF(pos), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(target, drop)


@pytest.fixture
def shoot(artifacts_dir) -> Callable[[QWidget, str], Path]:
    """Save a screenshot under tests/.artifacts/screenshots (git-ignored)."""
    folder = artifacts_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def save(widget: QWidget, name: str) -> Path:
        QApplication.processEvents()
        path = folder / f"{name}.png"
        assert widget.grab().save(str(path)), path
        return path

    return save


@pytest.fixture
def ui(qtbot):
    """The helpers above, bound to this test's qtbot (test modules cannot import a conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        wait_idle=lambda w, timeout=60_000: wait_idle(qtbot, w, timeout),
        ask=lambda w, q, timeout=60_000: ask(qtbot, w, q, timeout),
        drop_files=drop_files, scripted=scripted, answer_md=ANSWER_MD)
