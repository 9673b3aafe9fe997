"""Conversations that last: the SQLite store and the Assistant over it (real KB, scripted model)."""

from __future__ import annotations

from multi_agent.assistant import Assistant, AssistantConfig
from multi_agent.conversations import ConversationStore
from multi_agent.llm.scripted import ScriptedChatModel
from multi_agent.rag import Hit


def _assistant(tmp_path, store, answers):
    kb = tmp_path / "kb"
    kb.mkdir(exist_ok=True)
    (kb / "okapi.md").write_text("The okapi is a giraffid that lives in the Ituri rainforest.\n", encoding="utf-8")
    return Assistant(AssistantConfig(backend="scripted", kb_dir=kb, reports_dir=tmp_path / "r", use_rerank=False),
                     chat_model=ScriptedChatModel(rules={"Responder": answers}), store=store)


def test_turns_are_kept_reopened_regenerated_edited_renamed_and_deleted(tmp_path):
    db = tmp_path / "conversations.sqlite"
    n = iter(range(100))
    a = _assistant(tmp_path, ConversationStore(db), lambda msgs: f"Answer {next(n)} [1].")
    a.ask("Where does the okapi live?")
    a.ask("What is it related to?")
    cid = a.conversation_id
    a.reset()
    a.ask("Second conversation")

    store = ConversationStore(db)                          # a new process: everything is still there
    (second, first) = store.list()
    assert (first.id, first.title, first.turns) == (cid, "Where does the okapi live?", 2)
    assert second.turns == 1
    b = _assistant(tmp_path, store, lambda msgs: f"Again {next(n)} [1].")
    turns = b.open_conversation(cid)
    assert [t.question for t in turns] == ["Where does the okapi live?", "What is it related to?"]
    assert isinstance(turns[0].evidence[0], Hit) and turns[0].evidence[0].source == "okapi.md"
    assert turns[0].citations[0]["source"] == "okapi.md"

    b.regenerate()                                          # the last answer is replaced
    assert [t.question for t in b.history] == ["Where does the okapi live?", "What is it related to?"]
    assert b.history[-1].answer.startswith("Again")
    b.ask("Is it a zebra?", replace_from=1)                 # edit and resend the second question
    assert [t.question for t in store.turns(cid)] == ["Where does the okapi live?", "Is it a zebra?"]

    store.rename(cid, "Okapi facts")
    assert store.get(cid).title == "Okapi facts"
    store.delete(cid)
    assert [c.id for c in store.list()] == [second.id]
