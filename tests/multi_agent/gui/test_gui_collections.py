"""Several named knowledge bases in the window: add a folder as a collection, switch, answer from
it, and a reopened conversation goes back to its own knowledge base."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_switch_between_named_knowledge_bases(make_window, make_assistant, ui, qtbot, tmp_path, kb_dir, shoot):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "okapi.md").write_text("The okapi lives in the Ituri rainforest and eats leaves.\n", encoding="utf-8")
    w = make_window(make_assistant(ui.scripted("From the notes [1].")))
    ui.ask(w, "How does MoE-LoRA route tokens?")
    first = w.assistant.conversation_id
    assert [w.kb_panel.collection.itemText(i) for i in range(w.kb_panel.collection.count())] == ["default", "kb"]

    w.new_chat()                                            # the next conversation uses "zoo"
    w.add_collection(str(zoo), "zoo")
    ui.wait_idle(w)
    assert w.kb_panel.collection.currentText() == "zoo" and w.kb_panel.file_names() == ["okapi.md"]
    ui.ask(w, "Where does the okapi live?")
    assert w.evidence_panel.hits[0].source == "okapi.md"
    shoot(w, "kb-collections")

    w.open_conversation(first)                              # its own knowledge base comes back
    ui.wait_idle(w)
    assert w.kb_panel.collection.currentText() == "kb" and "moelora.md" in w.kb_panel.file_names()
    assert w.assistant.kb.kb_dir == kb_dir
    ui.ask(w, "And the experts?")
    assert w.evidence_panel.hits[0].source in ("moelora.md", "training-guide.txt")

    w.switch_collection("zoo")                              # switching mid-conversation moves it
    ui.wait_idle(w)
    assert w.store.get(first).kb == str(tmp_path / "zoo")
