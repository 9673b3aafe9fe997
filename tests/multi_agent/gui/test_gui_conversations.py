"""Conversations that last, in the window: list, reopen, rename, delete, new chat, regenerate,
edit and resend; kept in SQLite next to the settings file across restarts."""

from __future__ import annotations

import itertools

import pytest


@pytest.mark.slow
def test_conversations_list_reopen_rename_delete_regenerate_edit(make_window, make_assistant, ui, qtbot,
                                                                  gui_settings, shoot):
    n = itertools.count(1)
    model = ui.scripted(lambda msgs: f"Answer number {next(n)} about MoE-LoRA [1].")
    w = make_window(make_assistant(model))
    ui.ask(w, "How does MoE-LoRA route tokens?")
    ui.ask(w, "How many experts are there?")
    assert w.conv_panel.titles() == ["How does MoE-LoRA route tokens?"]
    first = w.assistant.conversation_id

    w.new_chat()
    ui.ask(w, "Which learning rate for QLoRA?")
    assert w.conv_panel.titles() == ["Which learning rate for QLoRA?", "How does MoE-LoRA route tokens?"]

    w.open_conversation(first)                               # reopen: the chat shows its turns
    shown = [(m.role, m.text) for m in w.chat.messages if m.role in ("user", "assistant")]
    assert [t for r, t in shown if r == "user"] == ["How does MoE-LoRA route tokens?", "How many experts are there?"]
    assert w.evidence_panel.tree.topLevelItemCount() > 0     # the last turn's evidence is back
    ui.ask(w, "And the rank?")                               # ...and the next question continues it
    assert [t.question for t in w.store.turns(first)][-1] == "And the rank?"

    calls = len(model.calls("Responder"))
    w.regenerate()
    ui.wait_idle(w)
    assert len(model.calls("Responder")) == calls + 1
    turns = w.store.turns(first)
    assert len(turns) == 3 and turns[-1].question == "And the rank?"
    assert [m.text for m in w.chat.messages if m.role == "user"].count("And the rank?") == 1

    w.edit_last()
    assert w.input.toPlainText() == "And the rank?"
    w.input.setPlainText("And the learning rate?")
    w.send()
    ui.wait_idle(w)
    assert [t.question for t in w.store.turns(first)] == ["How does MoE-LoRA route tokens?",
                                                           "How many experts are there?", "And the learning rate?"]
    assert "And the rank?" not in [m.text for m in w.chat.messages]

    w.rename_conversation(first, "MoE-LoRA routing")
    assert "MoE-LoRA routing" in w.conv_panel.titles()
    shoot(w, "conversations")
    w.close()

    again = make_window(make_assistant(model), settings=gui_settings)   # a restart: still there
    assert again.conv_panel.titles() == ["MoE-LoRA routing", "Which learning rate for QLoRA?"]
    again.delete_conversation(again.conv_panel.ids()[0])
    assert again.conv_panel.titles() == ["Which learning rate for QLoRA?"]
