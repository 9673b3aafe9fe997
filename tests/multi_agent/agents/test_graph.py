"""Routing of the agent graph, driven by the scripted chat model.

The Manager's decision must really decide retrieval, the Reviewer's verdict must decide the
rewrite, and the explicit counter must cap rewrites at one.
"""

from __future__ import annotations

import json
import threading

from multi_agent.agents.graph import MAX_REWRITES, Chain, ChainSettings
from multi_agent.llm.base import message_text
from multi_agent.tools import make_summary_tool

PLAN = json.dumps({"steps": ["Find passages", "Read them", "Answer with citations"], "needs_kb": True})


def decision(retrieve: bool, query: str = "", tool_call=None) -> str:
    return json.dumps({"retrieve": retrieve, "query": query, "reason": "test", "tool_call": tool_call})


def names(trace):
    return [s.name for s in trace.steps]


def test_manager_retrieve_drives_the_knowledge_step_with_its_query(scripted, kb):
    model = scripted(Planner=PLAN, Manager=decision(True, "cats sleeping hours"),
                     Responder="Cats sleep a lot [1] and hunt at dusk [2]. [9]", Reviewer="PASS")
    steps = []
    trace = Chain(model, kb).run("How long do cats sleep?", on_step=steps.append)
    assert kb.queries == ["cats sleeping hours"]                  # the Manager's query, not the question
    assert names(trace) == ["planner", "manager", "knowledge", "responder", "reviewer"]
    assert [s.name for s in steps] == names(trace)                # on_step saw every step, in order
    assert trace.decision.retrieve and len(trace.evidence) == 3
    assert [c["n"] for c in trace.citations] == [1, 2]            # [9] is out of range: dropped
    assert trace.citations[0]["chunk_id"] == kb.hits[0].chunk_id
    assert "[1] (doc1.md, p. 1)" in message_text(model.calls("Responder")[0][-1])
    assert trace.review.verdict == "PASS" and trace.review.rewrites == 0
    assert all(s.seconds >= 0 and s.output for s in trace.steps)


def test_manager_no_retrieval_skips_knowledge(scripted, kb):
    model = scripted(Planner=PLAN, Manager=decision(False), Responder="Paris.", Reviewer="PASS")
    trace = Chain(model, kb).run("What is the capital of France?")
    assert kb.queries == [] and trace.evidence == [] and trace.citations == []
    assert "knowledge" not in names(trace) and not trace.decision.retrieve


def test_use_kb_false_forces_no_retrieval_even_if_the_manager_wants_it(scripted, kb):
    model = scripted(Planner=PLAN, Manager=decision(True, "cats"), Responder="ok", Reviewer="PASS")
    trace = Chain(model, kb).run("How long do cats sleep?", use_kb=False)
    assert kb.queries == [] and not trace.decision.retrieve
    assert "switched off" in trace.decision.reason


def test_empty_knowledge_base_is_not_searched(scripted, make_kb):
    empty = make_kb(has_files=False)
    trace = Chain(scripted(Manager=decision(True, "x")), empty).run("q?")
    assert empty.queries == [] and trace.decision.reason == "knowledge base is empty"


def test_retry_then_pass_rewrites_once_with_the_feedback(scripted, kb):
    model = scripted(Planner=PLAN, Manager=decision(True, "cats"),
                     Responder=["first draft", "second draft [1]"],
                     Reviewer=["RETRY: cite the evidence", "PASS"])
    trace = Chain(model, kb).run("How long do cats sleep?")
    responder_calls = model.calls("Responder")
    assert len(responder_calls) == 2
    rewrite_prompt = message_text(responder_calls[1][-1])
    assert "first draft" in rewrite_prompt and "cite the evidence" in rewrite_prompt
    assert trace.answer == "second draft [1]" and trace.review.verdict == "PASS"
    assert trace.review.rewrites == 1
    assert names(trace) == ["planner", "manager", "knowledge", "responder", "reviewer", "responder", "reviewer"]


def test_rewrite_cap_holds_when_the_reviewer_always_says_retry(scripted, kb):
    model = scripted(Planner=PLAN, Manager=decision(False), Responder="an answer",
                     Reviewer="RETRY: still not good")
    trace = Chain(model, kb).run("q?")
    assert MAX_REWRITES == 1
    assert len(model.calls("Responder")) == 1 + MAX_REWRITES
    assert trace.review.verdict == "RETRY" and trace.review.rewrites == 1
    assert "limit reached" in trace.steps[-1].output


def test_garbage_from_every_agent_still_completes(scripted, kb):
    junk = "ĠĠ )(*& <|im_end|> 12 ## ,,"
    model = scripted(Planner=junk, Manager=junk, Responder=junk, Reviewer=junk)
    trace = Chain(model, kb).run("How long do cats sleep?")
    assert trace.error is None and not trace.cancelled
    assert 3 <= len(trace.plan.steps) <= 5 and not trace.plan.parsed
    assert trace.decision.retrieve and kb.queries == ["How long do cats sleep?"]   # fallback query
    assert trace.answer == junk.strip() and trace.review.verdict == "PASS"


def test_history_reaches_the_responder(scripted, kb):
    model = scripted(Manager=decision(False))
    Chain(model, kb).run("second question", history=[("first question", "first answer")])
    msgs = model.calls("Responder")[0]
    texts = [message_text(m) for m in msgs]
    assert texts[1:3] == ["first question", "first answer"] and "second question" in texts[-1]
    manager_prompt = message_text(model.calls("Manager")[0][-1])   # for a standalone search query
    assert "Q: first question\nA: first answer" in manager_prompt


def test_chinese_question_gets_chinese_prompts(scripted, kb):
    model = scripted()
    Chain(model, kb).run("小苔藓什么时候保送到厦门大学？")
    assert "简体中文" in message_text(model.calls("Responder")[0][0])


def test_cancel_during_the_answer_stops_the_turn(scripted, kb):
    model = scripted(Planner=PLAN, Manager=decision(False),
                     Responder="one two three four five six seven eight nine ten")
    cancel = threading.Event()
    tokens = []

    def on_token(t):
        tokens.append(t)
        if len(tokens) == 3:
            cancel.set()

    trace = Chain(model, kb).run("q?", on_token=on_token, cancel=cancel)
    assert trace.cancelled and len(tokens) == 3
    assert trace.answer == "one two three"                      # the partial answer is kept
    assert model.calls("Reviewer") == [] and "reviewer" not in names(trace)


def test_cancel_before_start_runs_no_model(scripted, kb):
    model = scripted()
    cancel = threading.Event()
    cancel.set()
    trace = Chain(model, kb).run("q?", cancel=cancel)
    assert trace.cancelled and model.prompts == [] and trace.steps == []


def test_manager_can_call_the_summary_tool(scripted, kb, tmp_path):
    history = []
    tool = make_summary_tool(lambda: history, tmp_path)
    call = {"name": "save_session_summary", "arguments": {"title": "cat facts"}}
    model = scripted(Manager=decision(True, "cats", tool_call=call), Responder="Cats sleep [1].")
    trace = Chain(model, kb, tools=[tool]).run("Save our chat about cats", commit=history.append)
    assert names(trace)[-1] == "tools" and trace.tool_calls[0]["name"] == "save_session_summary"
    files = list(tmp_path.glob("*_cat-facts.md"))
    assert len(files) == 1 and "Save our chat about cats" in files[0].read_text(encoding="utf-8")
    assert str(files[0]) in trace.answer


def test_a_failing_knowledge_base_does_not_lose_the_turn(scripted):
    class Broken:
        def has_documents(self):
            return True

        def search(self, *a, **k):
            raise OSError("index is corrupt")

    trace = Chain(scripted(), Broken(), settings=ChainSettings(k=3)).run("q?")
    assert trace.error is None and trace.evidence == [] and trace.answer
    assert "OSError: index is corrupt" in next(s for s in trace.steps if s.name == "knowledge").output


def test_a_retrieval_error_without_a_message_still_says_what_failed(scripted):
    """#22.2: a bare FAISS AssertionError showed as "retrieval failed: " with nothing after it."""
    class Bare:
        def has_documents(self):
            return True

        def search(self, *a, **k):
            raise AssertionError()

    trace = Chain(scripted(), Bare(), settings=ChainSettings(k=3)).run("q?")
    out = next(s for s in trace.steps if s.name == "knowledge").output
    assert out == "retrieval failed: AssertionError: no message"


def test_dead_citations_are_removed_from_the_answer(scripted, kb):
    """#22.7: [9] with 3 passages stayed in the answer (a dead link in the chat and the report)."""
    trace = Chain(scripted(Responder="Cats [1] and dogs [9]. Both [2, 7]."), kb,
                  settings=ChainSettings(k=3)).run("Tell me about cats")
    assert trace.answer.startswith("Cats [1] and dogs. Both [2].")
    assert [c["n"] for c in trace.citations] == [1, 2]


def test_a_failing_model_is_reported_in_one_line(kb):
    from multi_agent.llm.scripted import ScriptedChatModel

    def boom(messages):
        raise ConnectionError("http://localhost:8000/v1 refused the connection")

    trace = Chain(ScriptedChatModel(rules={"Planner": boom}), kb).run("q?")
    assert trace.error == "ConnectionError: http://localhost:8000/v1 refused the connection"


def test_an_unopenable_knowledge_base_is_explained(scripted):
    def broken_kb():
        raise RuntimeError("index written by a newer version")

    trace = Chain(scripted(Manager=decision(True, "x")), broken_kb).run("q?")
    assert trace.error is None and not trace.decision.retrieve
    assert trace.decision.reason == "knowledge base unavailable: index written by a newer version"
    assert trace.steps[0].name == "knowledge"
