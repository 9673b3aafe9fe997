"""Reported app defects (#22.3, 6, 7, 10, 11; #19 headless --ask; #17 evidence once per turn),
on the real window offscreen over the real Assistant and knowledge base."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from multi_agent.assistant import Assistant, AssistantConfig
from multi_agent.rag import KnowledgeBase, RagConfig


def _many_files(kb_dir: Path, n: int = 48) -> None:
    for i in range(n):
        (kb_dir / f"note-{i:02d}.md").write_text(
            f"Note {i}. The capybara number {i} likes warm water and grass near the river bank.\n",
            encoding="utf-8")


def _assistant(kb_dir: Path, tmp_path: Path, ui, **rag) -> Assistant:
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, **rag))
    return Assistant(AssistantConfig(backend="scripted", kb_dir=kb_dir, reports_dir=tmp_path / "reports",
                                     use_rerank=False, k=3), chat_model=ui.scripted(), kb=kb)


@pytest.mark.slow
def test_chat_stays_usable_while_indexing_and_stop_keeps_finished_files(make_window, ui, qtbot, kb_dir,
                                                                          tmp_path, shoot):
    """#22.3: Send/Stop/Add files/Re-index were disabled through the whole embedding, with no cancel,
    and progress sat at 100%; an interrupted run kept nothing."""
    _many_files(kb_dir)
    w = make_window(_assistant(kb_dir, tmp_path, ui, batch_size=2, commit_seconds=0), wait=False)
    seen = []
    w._index_job.progress.connect(seen.append)
    qtbot.waitUntil(lambda: any(p.stage == "embedding" for p in seen), timeout=60_000)
    assert w.indexing and w.send_button.isEnabled() and w.kb_panel.add_button.isEnabled()
    assert w.kb_panel.stop_button.isVisible() and not w.kb_panel.reindex_button.isEnabled()
    shoot(w, "kb-indexing")
    w.input.setPlainText("What does the capybara like?")
    w.send()
    assert w._job is not None and w._job.kind == "ask"      # a question runs alongside indexing
    qtbot.waitUntil(lambda: any(p.files_done >= 10 for p in seen), timeout=60_000)
    w.stop_indexing()
    ui.wait_idle(w)
    assert any("stopped" in m.text for m in w.chat.messages if m.role == "info")
    assert any(m.role == "assistant" and m.text for m in w.chat.messages)
    kept = len(w.kb_panel.file_names())
    assert 0 < kept < 50                                    # finished files committed
    fractions = [p.fraction for p in seen if p.stage == "embedding"]
    assert fractions == sorted(fractions) and fractions[-1] < 1.0
    w.reindex()                                              # resumes: only the rest is embedded
    ui.wait_idle(w)
    assert len(w.kb_panel.file_names()) == 50
    note = [m.text for m in w.chat.messages if m.role == "info"][-1]
    assert f"{50 - kept} added" in note


def test_closing_while_indexing_returns_quickly(make_window, ui, qtbot, kb_dir, tmp_path):
    """#22.3: closing the window during indexing froze it for 37 s."""
    _many_files(kb_dir, 80)
    w = make_window(_assistant(kb_dir, tmp_path, ui, batch_size=4), wait=False)
    qtbot.waitUntil(lambda: w.indexing and w.kb_panel.progress.value() > 0, timeout=60_000)
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 10
    qtbot.waitUntil(lambda: not w.runner.busy(), timeout=5_000)


def test_non_documents_are_counted_quietly_and_csv_log_mdx_are_accepted(make_window, make_assistant, ui,
                                                                        qtbot, kb_dir, tmp_path):
    """#22.6: drops of .csv/.log/.mdx were refused; images and .rst in the folder showed as a red
    error block at every start."""
    (kb_dir / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (kb_dir / "readme.rst").write_text("Title\n=====\n", encoding="utf-8")
    w = make_window(make_assistant(ui.scripted()))
    assert not [m for m in w.chat.messages if m.role == "error"]
    assert "2 not documents" in w.kb_panel.status.text()
    outside = tmp_path / "outside"
    outside.mkdir()
    files = {"table.csv": "name,colour\nokapi,brown\n", "server.log": "12:00 okapi service started\n",
             "page.mdx": "# Okapi\n\nThe okapi is related to the giraffe.\n"}
    for name, text in files.items():
        (outside / name).write_text(text, encoding="utf-8")
    ui.drop_files(w.kb_panel, [outside / n for n in files])
    ui.wait_idle(w)
    assert set(files) <= set(w.kb_panel.file_names())
    assert not [m for m in w.chat.messages if m.role == "error"]


def test_subfolder_files_show_their_names_and_panel_works_without_a_model(make_window, gui_settings, ui,
                                                                          qtbot, kb_dir, shoot):
    """#22.10: files in sub-folders were cut to "en/git/2…"; with no model loaded the panel was
    disabled although indexing needs no chat model."""
    deep = kb_dir / "en" / "git" / "release-notes"
    deep.mkdir(parents=True)
    (deep / "2.43.0-release-notes.txt").write_text("Git 2.43 adds the --no-ahead-behind option.\n",
                                                   encoding="utf-8")
    prefs = gui_settings.load()
    prefs.backend, prefs.model_dir = "local", str(kb_dir / "no-such-model")
    gui_settings.save(prefs)
    w = make_window()                                        # autoload: the model fails to load
    ui.wait_idle(w)
    assert w.assistant is None and w.kb is not None
    assert "en/git/release-notes/2.43.0-release-notes.txt" in w.kb_panel.file_names()
    item = w.kb_panel.file_item("en/git/release-notes/2.43.0-release-notes.txt")
    assert item.text(0) == "2.43.0-release-notes.txt" and item.parent().text(0) == "release-notes/"
    assert w.kb_panel.add_button.isEnabled() and w.kb_panel.reindex_button.isEnabled()
    w.kb_panel.filter.setText("2.43")
    assert not item.isHidden() and w.kb_panel.file_item("moelora.md").isHidden()
    shoot(w, "kb-tree")
    w.reindex()                                              # indexing works with no chat model
    ui.wait_idle(w)
    assert "Knowledge base updated" in [m.text for m in w.chat.messages if m.role == "info"][-1]


def test_dead_citations_are_not_links(make_window, make_assistant, ui, qtbot, tmp_path):
    """#22.7: [9] with 3 passages stayed a dead link in the chat and the report."""
    w = make_window(make_assistant(ui.scripted("Capybaras swim well [1]. They sleep a lot [9].")))
    ui.ask(w, "Tell me about MoE-LoRA experts")
    answer = [m for m in w.chat.messages if m.role == "assistant"][-1].text
    assert "[1]" in answer and "[9]" not in answer
    assert 'href="cite:9"' not in w.chat.toHtml()
    report = w.export_session().read_text(encoding="utf-8")
    assert "[9]" not in report


def test_evidence_panel_is_filled_once_per_turn(make_window, make_assistant, ui, qtbot):
    """#17.6: the evidence panel was filled at the knowledge step and again when the turn ended."""
    w = make_window(make_assistant(ui.scripted()))
    calls = []
    show = w.evidence_panel.set_hits
    w.evidence_panel.set_hits = lambda hits: (calls.append(list(hits)), show(hits))
    ui.ask(w, "How does MoE-LoRA route tokens?")
    assert [len(c) > 0 for c in calls] == [False, True]      # cleared at send, filled by Knowledge


def test_chinese_interface_warns_without_a_cjk_font(make_window, make_assistant, ui, monkeypatch):
    """#22.11: with no CJK font the Chinese interface was all boxes and nothing warned."""
    import multi_agent.gui.window as window

    monkeypatch.setattr(window, "has_cjk_font", lambda: False)
    w = make_window(make_assistant())
    w.set_language("zh")
    assert any("fonts-noto-cjk" in m.text for m in w.chat.messages)
    monkeypatch.setattr(window, "has_cjk_font", lambda: True)
    n = len(w.chat.messages)
    w.set_language("en")
    w.set_language("zh")
    assert len(w.chat.messages) == n


def test_headless_ask_with_an_image_in_the_kb_exits_zero(settings_file, kb_dir, tmp_path, capsys, qapp):
    """#19: `main_app.py --ask` exited 1 because an image in the knowledge base was shown as an error."""
    from PyQt5.QtCore import QTimer

    from multi_agent import main_app

    (kb_dir / "holiday.jpg").write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")
    guard = QTimer(singleShot=True, interval=120_000)
    guard.timeout.connect(qapp.quit)
    guard.start()
    try:
        rc = main_app.main(["--settings", str(settings_file), "--backend", "scripted", "--kb-dir", str(kb_dir),
                            "--lang", "en", "--ask", "What is MoE-LoRA?"])
    finally:
        guard.stop()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[error]" not in out


def test_files_changed_in_the_folder_are_indexed_automatically(make_window, make_assistant, ui, qtbot, kb_dir):
    """#22 (several knowledge bases): watch the folders and re-index changed files automatically."""
    w = make_window(make_assistant(ui.scripted()))
    w.watch_timer.setInterval(100)
    qtbot.waitUntil(lambda: w._fp_indexed is not None, timeout=10_000)
    (kb_dir / "capybara.md").write_text("Capybaras are the largest rodents.\n", encoding="utf-8")
    qtbot.waitUntil(lambda: "capybara.md" in w.kb_panel.file_names(), timeout=60_000)
    (kb_dir / "moelora.md").unlink()
    qtbot.waitUntil(lambda: "moelora.md" not in w.kb_panel.file_names(), timeout=60_000)
    assert not [m for m in w.chat.messages if m.role == "error"]
