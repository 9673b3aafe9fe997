"""The desktop app's "Make training data" dialog, offscreen: selected knowledge-base documents -> Expander on a
worker thread -> preview table -> untick a pair -> save appends only the kept ones."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5.QtCore import Qt  # noqa: E402

from vlft.data import load_samples  # noqa: E402


def test_dialog_collects_previews_and_saves_the_kept_pairs(qtbot, docs_dir, tmp_path):
    from multi_agent.gui.expand_dialog import ExpandDialog
    from multi_agent.gui.i18n import Translator

    train = tmp_path / "train.json"
    dlg = ExpandDialog([str(docs_dir / "report.pdf"), str(docs_dir / "page.html")], str(tmp_path / "out"),
                       tr=Translator("zh"), train_json=str(train))
    qtbot.addWidget(dlg)
    assert dlg.run_button.text() == "提取"
    dlg.run_button.click()
    qtbot.waitUntil(lambda: dlg.table.rowCount() == 4 and dlg.save_button.isEnabled(), timeout=60_000)
    answers = [dlg.table.item(r, 3).text() for r in range(4)]
    assert "Fishing boats moored at the pier." in answers and "一只猫躺在沙发上晒太阳" in answers
    drop = answers.index("Fishing boats moored at the pier.")
    dlg.table.item(drop, 0).setCheckState(Qt.Unchecked)
    with qtbot.waitSignal(dlg.saved, timeout=60_000) as sig:
        dlg.save_button.click()
    assert sig.args[0].written == 3 and sig.args[0].appended == (3, 0)
    kept = [s["messages"][1]["content"][0]["text"] for s in load_samples(train)]
    assert len(kept) == 3 and "Fishing boats moored at the pier." not in kept
    assert "3" in dlg.status.text()


def test_dialog_without_sources_says_so(qtbot, tmp_path):
    from multi_agent.gui.expand_dialog import ExpandDialog

    dlg = ExpandDialog([], str(tmp_path / "out"))
    qtbot.addWidget(dlg)
    assert not dlg.run_button.isEnabled() and "Select documents" in dlg.status.text()


def test_button_in_the_knowledge_panel_opens_the_dialog_with_the_selection(qtbot, docs_dir):
    from PyQt5.QtWidgets import QWidget

    from multi_agent.gui.expand_dialog import install_expand_button
    from multi_agent.gui.i18n import Translator
    from multi_agent.gui.widgets import KnowledgePanel

    window = QWidget()
    qtbot.addWidget(window)
    window.tr_ = Translator("en")
    window.kb_panel = KnowledgePanel(window.tr_, window)
    window.kb_panel.set_folder(str(docs_dir))
    window.kb_panel.set_files([{"path": "report.pdf", "chunks": 3}, {"path": "notes.md", "chunks": 1}])
    window.kb_panel.file_item("notes.md").setSelected(True)
    button = install_expand_button(window)
    button.click()
    dlg = window.expand_dialog
    qtbot.addWidget(dlg)
    assert [dlg.sources.item(i).text() for i in range(dlg.sources.count())] == [str(docs_dir / "notes.md")]
    dlg.close()


@pytest.mark.slow
def test_dialog_local_generator_uses_the_apps_shared_model(qtbot, docs_dir, tmp_path, tiny_model_dir):
    """"local" in the app reuses the process-wide model of the chat (multi_agent.llm.local), not a second copy."""
    from multi_agent.gui.expand_dialog import ExpandDialog
    from multi_agent.llm.local import release_generators, shared_generator

    dlg = ExpandDialog([str(docs_dir / "plain.txt")], str(tmp_path / "out"), model=str(tiny_model_dir))
    qtbot.addWidget(dlg)
    dlg.gen_mode.setCurrentIndex(1)          # local model
    try:
        dlg.run_button.click()
        qtbot.waitUntil(lambda: dlg._result is not None and not dlg.progress.isVisible(), timeout=120_000)
        assert dlg._expander.generator.vl is shared_generator(tiny_model_dir)
        assert dlg._result.generated == 1     # one text chunk asked about
    finally:
        release_generators()
