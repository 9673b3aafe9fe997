"""Entry point on the real tiny local model, attachments, settings kept between runs, languages."""

from __future__ import annotations

import subprocess
import sys

from PyQt5.QtCore import Qt
from PyQt5.QtGui import QImage
from PyQt5.QtWidgets import QApplication, QToolButton

from multi_agent.gui.dialogs import SettingsDialog
from multi_agent.gui.settings import AppSettings, Prefs
from multi_agent.gui.window import MainWindow
from vlft.paths import COCO_SAMPLE_DIR, REPO_DIR


def test_main_app_starts_on_embedded_tiny_model(qtbot, monkeypatch, tiny_model_dir, settings_file, kb_dir,
                                                shoot):
    """``main_app.main`` with nothing configured: embedded tiny model, says so, answers for real."""
    import multi_agent.llm.local as local
    from multi_agent import main_app

    monkeypatch.setattr(local, "DEFAULT_TINY_DIR", tiny_model_dir)  # the session's tiny model, not output/
    # Short, sampled answers: greedy decoding of random weights repeats a token that decodes to "".
    settings = AppSettings(settings_file)
    settings.save(Prefs(max_new_tokens=24, temperature=1.0))
    seen = {}

    def run_loop(app):  # stands in for app.exec_(): drive the window, then close it
        (w,) = [t for t in QApplication.topLevelWidgets() if isinstance(t, MainWindow) and t.isVisible()]
        qtbot.waitUntil(lambda: w.assistant is not None and not w.busy, timeout=120_000)
        seen["status"] = w.model_label.text()
        tokens: list[str] = []
        w.use_kb.setChecked(False)
        w.input.setPlainText("Describe this picture.")
        w.attachments.add([str(sorted((COCO_SAMPLE_DIR / "images").glob("*.jpg"))[0])])
        qtbot.keyClick(w.input, Qt.Key_Return)
        w._job.token.connect(tokens.append)
        qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
        seen["tokens"], seen["messages"] = tokens, list(w.chat.messages)
        seen["steps"] = w.plan_panel.toPlainText()
        shoot(w, "tiny-model")
        w.close()
        return 0

    monkeypatch.setattr(QApplication, "exec_", run_loop)
    rc = main_app.main(["--settings", str(settings_file), "--backend", "local", "--kb-dir", str(kb_dir),
                        "--lang", "en"])
    assert rc == 0
    assert seen["status"] == local.TINY_NOTICE
    answer = seen["messages"][-1]
    assert answer.role == "assistant" and answer.text, seen["messages"][-1]
    assert len(seen["tokens"]) >= 2 and "".join(seen["tokens"]).strip()
    assert "responder" in seen["steps"] and "reviewer" in seen["steps"]
    prefs = AppSettings(settings_file).load()
    assert (prefs.backend, prefs.model_dir, prefs.use_kb) == ("local", "", False)  # remembered


def test_prefs_defaults_match_assistant_config():
    from multi_agent.assistant import AssistantConfig

    prefs, cfg = Prefs(), AssistantConfig()
    for name in ("backend", "openai_url", "max_new_tokens", "temperature", "k", "use_rerank"):
        assert getattr(prefs, name) == getattr(cfg, name), name


def test_every_interface_string_has_both_languages():
    import re

    from multi_agent.gui.i18n import TEXT

    used = set()
    for path in (REPO_DIR / "multi_agent" / "gui").glob("*.py"):
        used |= set(re.findall(r"""(?:tr_|\bt)\(["']([a-z_.]+)["']""", path.read_text(encoding="utf-8")))
    assert used and not used - TEXT.keys(), sorted(used - TEXT.keys())
    assert all(en and zh and en != zh or k.startswith(("evidence.col.n", "dlg.markdown"))
               for k, (en, zh) in TEXT.items())


def test_script_runs_from_repo_root():
    """``python multi_agent/main_app.py`` finds the package without installing it."""
    out = subprocess.run([sys.executable, "multi_agent/main_app.py", "--help"], cwd=REPO_DIR,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--model_dir" in out.stdout and "--kb-dir" in out.stdout


def test_headless_demo_asks_and_saves_a_screenshot(settings_file, kb_dir, tmp_path, capsys, qapp):
    """``main_app.py --ask Q --screenshot P`` (make demo, CI): real event loop, then exits 0."""
    from PyQt5.QtCore import QTimer

    from multi_agent import main_app

    guard = QTimer(singleShot=True, interval=120_000)  # never hang the suite
    guard.timeout.connect(qapp.quit)
    guard.start()
    shot = tmp_path / "demo.png"
    try:
        rc = main_app.main(["--settings", str(settings_file), "--backend", "scripted", "--kb-dir",
                            str(kb_dir), "--lang", "en", "--ask", "What is MoE-LoRA?", "--screenshot", str(shot)])
    finally:
        guard.stop()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[assistant] According to the knowledge base [1]" in out
    assert QImage(str(shot)).width() > 600


def test_attach_by_drop_paste_and_remove(make_window, make_assistant, ui, qtbot, shoot):
    w = make_window(make_assistant(ui.scripted("A plate of food.")))
    images = sorted((COCO_SAMPLE_DIR / "images").glob("*.jpg"))[:2]

    ui.drop_files(w.input, [images[0]])        # drop on the input box
    ui.drop_files(w, [images[1]])              # drop anywhere on the window
    QApplication.clipboard().setImage(QImage(str(images[0])).scaled(50, 40))
    w.input.setFocus()
    qtbot.keyClick(w.input, Qt.Key_V, Qt.ControlModifier)  # paste an image from the clipboard
    paths = w.attachments.paths()
    assert paths[:2] == [str(images[0]), str(images[1])] and len(paths) == 3
    assert paths[2].endswith(".png") and QImage(paths[2]).size().width() == 50
    assert w.attachments.isVisible()
    shoot(w, "attachments")

    remove = w.attachments.findChildren(QToolButton, "remove")
    qtbot.mouseClick(remove[1], Qt.LeftButton)
    assert w.attachments.paths() == [str(images[0]), paths[2]]

    ui.ask(w, "What is on the plates?")
    user = [m for m in w.chat.messages if m.role == "user"][-1]
    assert user.images == [str(images[0]), paths[2]]
    assert w.attachments.paths() == [] and not w.attachments.isVisible()
    assert w.chat.messages[-1].text == "A plate of food."


def test_settings_and_language_kept_between_runs(make_window, make_assistant, gui_settings, qtbot, shoot):
    prefs = gui_settings.load()
    prefs.language = "zh"
    gui_settings.save(prefs)
    w = make_window(make_assistant())
    assert w.send_button.text() == "发送" and w.use_kb.text() == "启用知识库检索 (RAG)"
    assert w.evidence_box.title() == "检索证据"
    shoot(w, "chinese")

    w.language_actions["en"].trigger()
    assert w.send_button.text() == "Send" and w.evidence_box.title() == "Evidence"
    w.use_kb.setChecked(False)
    w.resize(1100, 700)
    w.close()

    again = make_window(make_assistant(), settings=AppSettings(gui_settings.path))
    assert again.tr_.language == "en" and again.send_button.text() == "Send"
    assert not again.use_kb.isChecked()
    assert (again.width(), again.height()) == (1100, 700)  # geometry restored


def test_model_picker_reloads_the_assistant_off_the_gui_thread(make_window, make_assistant, gui_settings,
                                                               tmp_path, qtbot):
    w = make_window(make_assistant())
    first = w.assistant
    dialog = SettingsDialog(w.prefs, w.tr_, w)
    assert dialog.model_dir.isEnabled() is False  # scripted backend: no model folder to pick
    dialog.backend.setCurrentText("local")
    assert dialog.model_dir.isEnabled() and dialog.adapter_dir.isEnabled()
    dialog.backend.setCurrentText("scripted")
    dialog.k.setValue(2)
    dialog.max_new_tokens.setValue(64)
    new = dialog.prefs()
    assert (new.k, new.max_new_tokens, new.backend) == (2, 64, "scripted")

    w.apply_prefs(new)
    assert w.busy and w._job.kind == "load" and not w.send_button.isEnabled()
    qtbot.waitUntil(lambda: w.assistant is not first and not w.busy, timeout=60_000)
    assert (w.assistant.config.k, w.assistant.config.max_new_tokens) == (2, 64)
    assert AppSettings(gui_settings.path).load().k == 2
