"""Knowledge-base panel: dropped PDFs are copied, indexed off the GUI thread with progress,
listed, and then retrieved with their page numbers."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from PyQt5.QtCore import Qt, QUrl


def make_pdf(path: Path) -> Path:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pages = ["Qwen3-VL report. Chapter one describes the data pipeline for COCO captions.",
             "Chapter two. The zebrafish experiment used a learning rate warmup of 300 steps "
             "and the zebrafish adapter reached a CIDEr of 1.12 on the validation split."]
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def test_drop_pdf_is_indexed_listed_and_cited(make_window, make_assistant, ui, qtbot, tmp_path, kb_dir,
                                              opened, shoot):
    w = make_window(make_assistant(ui.scripted("The zebrafish adapter reached CIDEr 1.12 [1].")))
    outside = tmp_path / "outside"
    outside.mkdir()
    pdf = make_pdf(outside / "zebrafish-report.pdf")

    progress = []
    show = w.kb_panel.set_progress
    w.kb_panel.set_progress = lambda p: (progress.append(p), show(p))
    ui.drop_files(w.kb_panel, [pdf])
    assert w.indexing and w.kb_panel.progress.isVisible() and w.kb_panel.stop_button.isVisible()
    assert w.send_button.isEnabled()                          # the chat stays usable while indexing
    ui.wait_idle(w)

    assert progress and progress[-1].files_done == progress[-1].files_total == 1  # reached total
    assert any(p.stage == "embedding" and p.chunks_done for p in progress)
    assert (kb_dir / "zebrafish-report.pdf").is_file()      # copied into the knowledge base
    names = w.kb_panel.file_names()
    assert "zebrafish-report.pdf" in names
    row = w.kb_panel.file_item("zebrafish-report.pdf")
    assert row.text(2) == "2"  # pages
    assert not w.kb_panel.progress.isVisible()
    assert "1 added" in w.chat.messages[-1].text
    shoot(w, "kb-indexed")

    ui.ask(w, "What CIDEr did the zebrafish adapter reach?")
    top = w.evidence_panel.tree.topLevelItem(0)
    assert (top.text(1), top.text(2)) == ("zebrafish-report.pdf", "2")
    w.evidence_panel.open_row(0)                             # the passage, at its page, highlighted
    assert w.viewer.isVisible() and "CIDEr of 1.12" in w.viewer.highlighted()
    assert "Chapter one" not in w.viewer.text.toPlainText()  # page 2 only
    w.viewer.open_button.click()                             # the file itself, at that page
    url = QUrl.fromLocalFile(str((kb_dir / "zebrafish-report.pdf").resolve()))
    url.setFragment("page=2")
    assert opened[-1] == url


def test_unsupported_and_queued_drops(make_window, make_assistant, ui, qtbot, tmp_path, kb_dir):
    model = ui.scripted("slow " * 40, token_delay=0.02)
    w = make_window(make_assistant(model))
    notes = tmp_path / "办公室笔记.md"  # Chinese names and text are first-class
    notes.write_text("# 笔记\n\n办公室的植物是龟背竹。The office plant is a monstera.\n", encoding="utf-8")
    sheet = tmp_path / "table.odt"
    sheet.write_bytes(b"PK")

    w.input.setPlainText("a question")
    qtbot.keyClick(w.input, Qt.Key_Return)
    ui.drop_files(w.kb_panel, [notes, sheet])  # during a request: indexed alongside it
    assert w._job.kind == "ask" and "table.odt" in w.chat.messages[-1].text
    assert w.chat.messages[-1].role == "info"                # a quiet note, not a red error
    assert w.indexing
    ui.drop_files(w.kb_panel, [notes])                       # while indexing: queued
    assert "Queued" in w.kb_panel.status.text()
    qtbot.waitUntil(lambda: "办公室笔记.md" in w.kb_panel.file_names(), timeout=60_000)
    ui.wait_idle(w)
    assert len(model.calls("Responder")) == 1
    assert not (kb_dir / "table.odt").exists()
    ui.ask(w, "办公室的植物是什么？")
    assert w.evidence_panel.tree.topLevelItem(0).text(1) == "办公室笔记.md"
