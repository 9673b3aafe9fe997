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

from vlft.config import BaseConfig, field, parse_config  # noqa: E402


@dataclass
class AppArgs(BaseConfig):
    """Start the Qwen-VL multi-agent desktop assistant."""

    settings: str | None = field(None, "settings INI file (default: the per-user one)")
    language: Literal["en", "zh"] | None = field(None, "interface language (default: saved, else system)",
                                                 aliases=("lang",))
    backend: Literal["local", "openai", "scripted"] | None = field(None, "chat-model backend")
    model_dir: str | None = field(None, "model folder (default: saved, else the embedded tiny model)", aliases=("model",))
    adapter: str | None = field(None, "LoRA adapter folder (default: saved, else none)")
    kb_dir: str | None = field(None, "knowledge-base folder", aliases=("kb",))
    verbose: bool = field(False, "log debug output")


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
                 "adapter_dir": args.adapter, "kb_dir": args.kb_dir}
    for name, value in overrides.items():
        if value is not None:
            setattr(prefs, name, value)
    settings.save(prefs)
    window = MainWindow(settings)
    window.show()
    return app.exec_()


def main(argv: list[str] | None = None) -> int:
    return run_app(parse_config(AppArgs, argv))


if __name__ == "__main__":
    sys.exit(main())
