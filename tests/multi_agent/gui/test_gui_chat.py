"""The window over the real Assistant (scripted backend) and the real knowledge base: asking,
streaming, evidence, one request at a time, cancel, errors, export."""

from __future__ import annotations

from PyQt5.QtCore import Qt, QUrl
from PyQt5.QtWidgets import QFileDialog

from vlft.paths import COCO_SAMPLE_DIR


def test_ask_streams_answer_and_evidence(make_window, make_assistant, ui, qtbot, opened, shoot, kb_dir):
    model = ui.scripted(token_delay=0.005)
    w = make_window(make_assistant(model))
    assert sorted(w.kb_panel.file_names()) == ["moelora.md", "training-guide.txt"]

    tokens: list[str] = []
    image = sorted((COCO_SAMPLE_DIR / "images").glob("*.jpg"))[0]
    w.attachments.add([str(image)])
    w.input.setPlainText("How does MoE-LoRA work, and what should I use on an 8 GB GPU?")
    qtbot.keyClick(w.input, Qt.Key_Return)
    assert w.busy and not w.send_button.isEnabled() and w.cancel_button.isEnabled()
    w._job.token.connect(tokens.append)
    ui.wait_idle(w)

    # Streamed token by token, and the final text is the rendered Markdown answer.
    assert len(tokens) > 10 and "".join(tokens).strip() == ui.answer_md.strip()
    user, answer = w.chat.messages[-2:]
    assert user.role == "user" and user.images == [str(image)]
    assert answer.role == "assistant" and answer.text == ui.answer_md
    html = w.chat.toHtml()
    assert "LoRA experts" in w.chat.toPlainText() and "cite:1" in html
    assert "<li" in html  # Markdown list rendered, not shown as "- ..."

    # Side panels: plan + decision, evidence with file/score, reviewer verdict.
    plan = w.plan_panel.toPlainText()
    assert "Planner" in plan and "retrieve: yes" in plan and "reviewer" in plan
    rows = w.evidence_panel.tree.topLevelItemCount()
    assert rows >= 1
    files = {w.evidence_panel.tree.topLevelItem(i).text(1) for i in range(rows)}
    assert files <= set(w.kb_panel.file_names())
    assert float(w.evidence_panel.tree.topLevelItem(0).text(3)) != 0.0
    assert "PASS" in w.review_panel.toPlainText()
    assert w.send_button.isEnabled() and not w.cancel_button.isEnabled()

    # A citation link selects its evidence row and shows the passage in its file, highlighted;
    # double-click does the same; "Open file" opens the file (recorded, not launched).
    w.chat.citation_clicked.emit(1)
    assert w.evidence_panel.tree.currentItem().text(0) == "1"
    hit = w.evidence_panel.hits[0]
    assert w.viewer.isVisible() and w.viewer.highlighted() == hit.text
    w.viewer.close()
    item = w.evidence_panel.tree.topLevelItem(0)
    rect = w.evidence_panel.tree.visualItemRect(item)
    qtbot.mouseClick(w.evidence_panel.tree.viewport(), Qt.LeftButton, pos=rect.center())
    qtbot.mouseDClick(w.evidence_panel.tree.viewport(), Qt.LeftButton, pos=rect.center())
    assert w.viewer.isVisible()
    w.viewer.open_button.click()
    assert opened and opened[-1] == QUrl.fromLocalFile(str((kb_dir / item.text(1)).resolve()))
    w.viewer.close()

    shoot(w, "answer")  # tests/.artifacts only: the README pictures come from scripts/screenshots.py


def test_enter_many_times_runs_one_request(make_window, make_assistant, ui, qtbot):
    model = ui.scripted("word " * 60, token_delay=0.02)
    assistant = make_assistant(model)
    w = make_window(assistant)
    w.input.setPlainText("first question")
    qtbot.keyClick(w.input, Qt.Key_Return)
    assert w.busy
    w.input.setPlainText("typed while it runs")
    for _ in range(40):  # the seed's window aborted here
        qtbot.keyClick(w.input, Qt.Key_Return)
        qtbot.keyClick(w.input, Qt.Key_Enter)
        w.send_button.click()
    assert w.busy and not w.send_button.isEnabled()
    ui.wait_idle(w)

    assert len(model.calls("Responder")) == 1
    assert [t.question for t in assistant.history] == ["first question"]
    assert [m.role for m in w.chat.messages].count("user") == 1
    assert w.input.toPlainText() == "typed while it runs"  # nothing typed was lost
    qtbot.waitUntil(lambda: not w.runner._live)  # the worker thread ended and was reaped
    # ... and the window is usable afterwards.
    ui.ask(w, "second question")
    assert [t.question for t in assistant.history] == ["first question", "second question"]


def test_reviewer_rewrite_replaces_the_streamed_draft(make_window, make_assistant, ui, qtbot):
    model = ui.scripted(["Draft without sources.", "Final answer with a source [1]."],
                        Reviewer=["RETRY: cite the knowledge base", "PASS"])
    w = make_window(make_assistant(model))
    ui.ask(w, "How does MoE-LoRA work?")
    assert w.chat.messages[-1].text == "Final answer with a source [1]."
    assert "Draft" not in w.chat.toPlainText()
    review = w.review_panel.toPlainText()
    assert "PASS" in review and "Rewrites: 1" in review


def test_closing_during_a_request_stops_it_cleanly(make_window, make_assistant, ui, qtbot):
    model = ui.scripted("slow " * 500, token_delay=0.02)
    w = make_window(make_assistant(model))
    w.input.setPlainText("a long one")
    qtbot.keyClick(w.input, Qt.Key_Return)
    qtbot.waitUntil(lambda: "slow" in w.chat.messages[-1].text, timeout=30_000)
    thread = next(iter(w.runner._live))
    w.close()  # cancels and waits: no "QThread destroyed while running" abort
    assert thread.isFinished()


def test_shift_enter_adds_a_line(make_window, make_assistant, qtbot):
    w = make_window(make_assistant())
    qtbot.keyClicks(w.input, "line one")
    qtbot.keyClick(w.input, Qt.Key_Return, Qt.ShiftModifier)
    qtbot.keyClicks(w.input, "line two")
    assert w.input.toPlainText() == "line one\nline two" and not w.busy


def test_cancel_stops_generation(make_window, make_assistant, ui, qtbot, shoot):
    long_answer = " ".join(f"w{i}" for i in range(400))
    model = ui.scripted(long_answer, token_delay=0.02)  # ~8 s if not stopped
    assistant = make_assistant(model)
    w = make_window(assistant)
    w.input.setPlainText("tell me everything")
    qtbot.keyClick(w.input, Qt.Key_Return)
    qtbot.waitUntil(lambda: "w5 " in w.chat.messages[-1].text, timeout=30_000)
    assert "planner ✓" in w.chat.messages[-1].note  # progress of the agents so far
    shoot(w, "streaming")
    qtbot.mouseClick(w.cancel_button, Qt.LeftButton)
    assert not w.cancel_button.isEnabled()
    ui.wait_idle(w, 5_000)

    answer = w.chat.messages[-1]
    assert answer.role == "assistant" and "(stopped)" in answer.note
    assert 0 < len(answer.text.split()) < 300
    assert assistant.history[-1].cancelled
    assert w.send_button.isEnabled()
    shoot(w, "cancelled")

    w.input.setPlainText("again")  # Esc stops too
    qtbot.keyClick(w.input, Qt.Key_Return)
    qtbot.waitUntil(lambda: "w5 " in w.chat.messages[-1].text, timeout=30_000)
    qtbot.keyClick(w.input, Qt.Key_Escape)
    ui.wait_idle(w, 5_000)
    assert "(stopped)" in w.chat.messages[-1].note


def test_errors_show_in_chat_and_window_stays_usable(make_window, make_assistant, ui, tmp_path, shoot):
    def broken(messages):
        raise RuntimeError("CUDA out of memory (simulated)")

    model = ui.scripted(broken)
    w = make_window(make_assistant(model))
    ui.ask(w, "will this fail?")
    errors = [m for m in w.chat.messages if m.role == "error"]
    assert errors and "CUDA out of memory" in errors[-1].text
    assert "CUDA out of memory" in w.chat.toPlainText()

    # A missing attachment: one clear line naming the file.
    gone = tmp_path / "gone.png"
    gone.write_bytes(b"x")
    w.attachments.add([str(gone)])
    gone.unlink()
    ui.ask(w, "what is in the picture?")
    assert f"{gone}: image file not found" in w.chat.messages[-1].text
    shoot(w, "errors")

    # Still usable: the next question is answered.
    model.rules["Responder"] = "Recovered."
    ui.ask(w, "and now?")
    assert w.chat.messages[-1].role == "assistant" and w.chat.messages[-1].text == "Recovered."


def test_model_load_failure_shows_in_chat(make_window, gui_settings, tmp_path):
    prefs = gui_settings.load()
    prefs.backend, prefs.model_dir = "local", str(tmp_path / "no-such-model")
    gui_settings.save(prefs)
    w = make_window(None)  # loads from the settings on a worker thread
    assert w.assistant is None
    assert any(m.role == "error" and "no-such-model" in m.text for m in w.chat.messages)
    assert "no-such-model" in w.statusBar().currentMessage()
    assert not w.send_button.isEnabled() and w.act_settings.isEnabled()


def test_export_writes_markdown(make_window, make_assistant, ui, tmp_path, monkeypatch):
    w = make_window(make_assistant(ui.scripted()))
    ui.ask(w, "How does MoE-LoRA work?")
    report = w.export_session()
    text = report.read_text(encoding="utf-8")
    assert report.parent == tmp_path / "reports" and report.suffix == ".md"
    assert "How does MoE-LoRA work?" in text and "LoRA experts" in text
    assert str(report) in w.chat.messages[-1].text

    target = tmp_path / "exports" / "my-session"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "Markdown (*.md)"))
    w.act_save_as.trigger()
    saved = target.with_suffix(".md")
    assert saved.read_text(encoding="utf-8") == text
