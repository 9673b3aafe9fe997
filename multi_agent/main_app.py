"""Desktop assistant: ``python multi_agent/main_app.py`` (from the repo root or anywhere).

With no model configured it starts on the embedded tiny Qwen3-VL and the sample knowledge base,
and says so in the status bar; choose a real model under Model -> Model & settings.
Flags override the saved settings (and are remembered like choices made in the window).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlft.config import BaseConfig, field, parse_config, require  # noqa: E402


@dataclass
class AppArgs(BaseConfig):
    """Start the Qwen-VL multi-agent desktop assistant."""

    settings: str | None = field(None, "settings INI file (default: the per-user one)")
    language: Literal["en", "zh"] | None = field(
        None, "interface language; unset: the saved one, else the system locale", aliases=("lang",))
    backend: Literal["local", "openai", "scripted"] | None = field(None, "chat-model backend")
    model_dir: str | None = field(None, "model folder; unset: the saved one, else the embedded tiny model",
                                  aliases=("model",))
    adapter: str | None = field(None, "LoRA adapter folder; unset: the saved one, else none")
    kb_dir: str | None = field(None, "knowledge-base folder", aliases=("kb",))
    max_new_tokens: int | None = field(None, "longest answer in tokens")
    ask: str | None = field(None, "headless demo: ask this once the model is loaded, then quit")
    screenshot: str | None = field(None, "with --ask: save a PNG of the window after the answer")
    verbose: bool = field(False, "log debug output")

    def validate(self) -> None:
        super().validate()
        require(self.screenshot is None or self.ask is not None, "screenshot", "needs --ask")
        require(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")


def run_app(args: AppArgs) -> int:
    """Open the window and run the Qt event loop until it closes."""
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication

    from multi_agent.gui.settings import AppSettings
    from multi_agent.gui.window import MainWindow
    from vlft.utils.logging import setup_logging

    setup_logging(args.verbose)
    app = QApplication.instance()
    if app is None:
        QApplication.setAttribute(Qt.AA_EnableHighDpiScaling, True)
        QApplication.setAttribute(Qt.AA_UseHighDpiPixmaps, True)
        app = QApplication(sys.argv[:1])
    settings = AppSettings(args.settings)
    prefs = settings.load()
    overrides = {"language": args.language, "backend": args.backend, "model_dir": args.model_dir,
                 "adapter_dir": args.adapter, "kb_dir": args.kb_dir, "max_new_tokens": args.max_new_tokens}
    for name, value in overrides.items():
        if value is not None:
            setattr(prefs, name, value)
    settings.save(prefs)
    window = MainWindow(settings)
    window.setAttribute(Qt.WA_DeleteOnClose)
    window.show()
    if args.ask:
        demo = HeadlessDemo(window, args.ask, args.screenshot)
        demo.start()
        rc = app.exec_()
        return rc or demo.rc
    return app.exec_()


class HeadlessDemo:
    """Wait for the model, ask one question, save a screenshot, close (``make demo``, CI)."""

    def __init__(self, window, question: str, screenshot: str | None):
        from PyQt5.QtCore import QTimer

        self.window, self.question, self.screenshot = window, question, screenshot
        self.asked = False
        self.rc = 0
        self.timer = QTimer(window, interval=200)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.timer.start()

    def _tick(self) -> None:
        w = self.window
        if w.busy:
            return
        if w.assistant is None:  # the load failed: the chat says why
            self._finish(1)
        elif not self.asked:
            self.asked = True
            w.input.setPlainText(self.question)
            w.send()
        else:
            self._finish(1 if any(m.role == "error" for m in w.chat.messages) else 0)

    def _finish(self, rc: int) -> None:
        self.timer.stop()
        self.rc = rc
        w = self.window
        for m in w.chat.messages[1:]:
            print(f"[{m.role}] {m.text}")
        if self.screenshot:
            Path(self.screenshot).parent.mkdir(parents=True, exist_ok=True)
            w.grab().save(self.screenshot)
            print(f"screenshot: {self.screenshot}")
        w.close()


def main(argv: list[str] | None = None) -> int:
    return run_app(parse_config(AppArgs, argv))


if __name__ == "__main__":
    sys.exit(main())
