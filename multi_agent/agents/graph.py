"""The turn graph (LangGraph): Planner -> Manager -> [Knowledge] -> Responder -> Reviewer -> [rewrite once].

    START -> planner -> manager --retrieve--> knowledge -> responder -> reviewer --RETRY, rewrites<1--> responder
                               \\--no retrieval-----------^                      \\--PASS or cap--> END

The Manager's decision picks the edge after it; the Reviewer's verdict and the explicit
``rewrites`` counter pick the edge after it. A tool the Manager asked for runs once the turn
is complete (so a session summary includes this turn). A cancelled turn goes straight to END.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypedDict

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph

from multi_agent.agents import knowledge, manager, planner, responder, reviewer
from multi_agent.agents.prompts import language_of
from multi_agent.agents.trace import Decision, Plan, Review, StepTrace, TurnTrace, cite_label
from multi_agent.llm.base import GenerationCancelled

MAX_REWRITES = 1


class TurnState(TypedDict, total=False):
    question: str
    images: list[Any]
    use_kb: bool
    lang: str
    kb_available: bool
    plan: Plan
    decision: Decision
    evidence: list[Any]
    answer: str
    verdict: str
    feedback: str
    review_raw: str
    rewrites: int              # answers rewritten so far; the Reviewer may ask for at most MAX_REWRITES
    rewrite_pending: bool
    kb_error: str              # why the knowledge base could not be opened ("" when fine)
    cancelled: bool


@dataclass
class ChainSettings:
    max_new_tokens: int = 512
    temperature: float = 0.0
    k: int = 5
    use_rerank: bool = True
    history_turns: int = 6      # earlier turns the Responder sees
    planner_tokens: int = 192
    manager_tokens: int = 160
    reviewer_tokens: int = 96


@dataclass
class TurnContext:
    """Per-turn callbacks and records (passed through the graph config, not the state)."""
    history: list[tuple[str, str]]
    on_token: Callable[[str], None] | None = None
    on_step: Callable[[StepTrace], None] | None = None
    cancel: threading.Event | None = None
    steps: list[StepTrace] = field(default_factory=list)

    def record(self, step: str, started: float, output: str, **data: Any) -> None:
        step = StepTrace(name=step, output=output, started=started,
                         seconds=round(time.time() - started, 4), data=data)
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)


def _ctx(config: RunnableConfig) -> TurnContext:
    return config["configurable"]["turn"]


class Chain:
    """Compiled once per model/knowledge base; ``run`` executes one turn."""

    def __init__(self, model: BaseChatModel, kb: Callable[[], Any] | Any | None,
                 tools: Sequence[BaseTool] = (), settings: ChainSettings | None = None):
        self.model = model
        self._kb = kb
        self.tools = {t.name: t for t in tools}
        self.settings = settings or ChainSettings()
        self.graph = self._build()

    @property
    def kb(self) -> Any:
        return self._kb() if callable(self._kb) else self._kb

    # -- graph ---------------------------------------------------------------------------
    def _build(self):
        g = StateGraph(TurnState)
        g.add_node("planner", self._planner)
        g.add_node("manager", self._manager)
        g.add_node("knowledge", self._knowledge)
        g.add_node("responder", self._responder)
        g.add_node("reviewer", self._reviewer)
        g.add_edge(START, "planner")
        g.add_conditional_edges("planner", lambda s: END if s.get("cancelled") else "manager",
                                ["manager", END])
        g.add_conditional_edges("manager", self._after_manager, ["knowledge", "responder", END])
        g.add_conditional_edges("knowledge", lambda s: END if s.get("cancelled") else "responder",
                                ["responder", END])
        g.add_conditional_edges("responder", lambda s: END if s.get("cancelled") else "reviewer",
                                ["reviewer", END])
        g.add_conditional_edges("reviewer", self._after_reviewer, ["responder", END])
        return g.compile()

    @staticmethod
    def _after_manager(s: TurnState) -> str:
        if s.get("cancelled"):
            return END
        return "knowledge" if s["decision"].retrieve else "responder"

    @staticmethod
    def _after_reviewer(s: TurnState) -> str:
        if s.get("cancelled"):
            return END
        return "responder" if s.get("rewrite_pending") else END

    # -- nodes ---------------------------------------------------------------------------
    def _planner(self, s: TurnState, config: RunnableConfig) -> dict:
        ctx, t0 = _ctx(config), time.time()
        try:
            p = planner.plan(self.model, s["question"], len(s["images"]), s["lang"], s["kb_available"] and s["use_kb"],
                             cancel=ctx.cancel, max_new_tokens=self.settings.planner_tokens)
        except GenerationCancelled:
            return {"cancelled": True}
        ctx.record("planner", t0, planner.format_plan(p), steps=p.steps, needs_kb=p.needs_kb,
                   parsed=p.parsed, raw=p.raw)
        return {"plan": p}

    def _manager(self, s: TurnState, config: RunnableConfig) -> dict:
        ctx, t0 = _ctx(config), time.time()
        try:
            d = manager.decide(self.model, s["question"], s["plan"], s["lang"], use_kb=s["use_kb"],
                               kb_available=s["kb_available"], tools=list(self.tools.values()),
                               history=ctx.history, cancel=ctx.cancel, max_new_tokens=self.settings.manager_tokens)
        except GenerationCancelled:
            return {"cancelled": True}
        if s.get("kb_error") and s["use_kb"]:
            d.reason = s["kb_error"]
        ctx.record("manager", t0, manager.format_decision(d), retrieve=d.retrieve, query=d.query,
                   reason=d.reason, tool_call=d.tool_call, raw=d.raw)
        return {"decision": d}

    def _knowledge(self, s: TurnState, config: RunnableConfig) -> dict:
        ctx, t0 = _ctx(config), time.time()
        if ctx.cancel is not None and ctx.cancel.is_set():
            return {"cancelled": True}
        query = s["decision"].query
        try:
            hits = knowledge.retrieve(self.kb, query, k=self.settings.k, rerank=self.settings.use_rerank)
        except Exception as e:  # a broken index must not lose the turn: answer without evidence
            why = " ".join(str(e).split()) or "no message"
            ctx.record("knowledge", t0, f"retrieval failed: {type(e).__name__}: {why}", query=query,
                       error=f"{type(e).__name__}: {why}", hits=[])
            return {"evidence": []}
        lines = [f"[{i}] {cite_label(h)}  (score {float(getattr(h, 'score', 0.0)):.3f})"
                 for i, h in enumerate(hits, 1)]
        ctx.record("knowledge", t0, f"query: {query}\n" + ("\n".join(lines) or "no passages found"),
                   query=query, hits=hits)
        return {"evidence": hits}

    def _responder(self, s: TurnState, config: RunnableConfig) -> dict:
        ctx, t0 = _ctx(config), time.time()
        rewriting = bool(s.get("rewrite_pending"))
        try:
            answer = responder.respond(
                self.model, s["question"], s["images"], s["plan"], s.get("evidence", []),
                ctx.history[-self.settings.history_turns:] if self.settings.history_turns else [],
                s["lang"], draft=s.get("answer") if rewriting else None,
                feedback=s.get("feedback") if rewriting else None,
                on_token=responder.BlankLineFilter(ctx.on_token) if ctx.on_token else None,
                cancel=ctx.cancel, max_new_tokens=self.settings.max_new_tokens,
                temperature=self.settings.temperature)
        except GenerationCancelled as c:
            return {"cancelled": True, "answer": c.partial}
        ctx.record("responder", t0, answer, rewrite=rewriting)
        return {"answer": answer, "rewrite_pending": False}

    def _reviewer(self, s: TurnState, config: RunnableConfig) -> dict:
        ctx, t0 = _ctx(config), time.time()
        try:
            verdict, feedback, raw = reviewer.review(
                self.model, s["question"], s.get("evidence", []), s["answer"], s["lang"],
                cancel=ctx.cancel, max_new_tokens=self.settings.reviewer_tokens)
        except GenerationCancelled:
            return {"cancelled": True}
        rewrites = s.get("rewrites", 0)
        again = verdict == "RETRY" and rewrites < MAX_REWRITES
        note = "" if verdict == "PASS" else (" -> rewrite" if again else " (rewrite limit reached; answer kept)")
        ctx.record("reviewer", t0, f"{verdict}{': ' + feedback if feedback else ''}{note}",
                   verdict=verdict, feedback=feedback, rewrites=rewrites, rewrite_next=again, raw=raw)
        return {"verdict": verdict, "feedback": feedback, "review_raw": raw,
                "rewrites": rewrites + 1 if again else rewrites, "rewrite_pending": again}

    # -- one turn ------------------------------------------------------------------------
    def run(self, question: str, images: Sequence[Any] = (), *, use_kb: bool = True,
            history: Sequence[tuple[str, str]] = (), on_token: Callable[[str], None] | None = None,
            on_step: Callable[[StepTrace], None] | None = None, cancel: threading.Event | None = None,
            commit: Callable[[TurnTrace], None] | None = None) -> TurnTrace:
        """Run the graph; ``commit(trace)`` is called before any tool runs (the Assistant adds
        the turn to its history there, so a summary written by the tool includes it)."""
        t0 = time.time()
        ctx = TurnContext(history=list(history), on_token=on_token, on_step=on_step, cancel=cancel)
        kb, kb_error = None, ""
        if use_kb:
            try:
                kb = self.kb
            except Exception as e:  # no usable knowledge base: answer without one, and say why
                kb_error = f"knowledge base unavailable: {e}"
                ctx.record("knowledge", t0, kb_error, error=str(e), hits=[])
        state: TurnState = {
            "question": question, "images": list(images), "use_kb": use_kb, "kb_error": kb_error,
            "lang": language_of(question),
            "kb_available": kb is not None and kb.has_documents(),
            "rewrites": 0, "cancelled": False,
        }
        trace = TurnTrace(question=question, images=[str(i) for i in images if not hasattr(i, "size")],
                          started=t0)
        try:
            final = self.graph.invoke(state, config={"configurable": {"turn": ctx}})
        except Exception as e:
            trace.error = f"{type(e).__name__}: {e}"
            final = state
        self._fill(trace, final, ctx)
        trace.cancelled = bool(final.get("cancelled")) or (cancel is not None and cancel.is_set())
        if commit is not None:
            commit(trace)
        if trace.decision.tool_call and not trace.cancelled and trace.error is None:
            self._run_tool(trace, ctx)
        trace.seconds = round(time.time() - t0, 4)
        return trace

    @staticmethod
    def _fill(trace: TurnTrace, s: TurnState, ctx: TurnContext) -> None:
        trace.plan = s.get("plan") or Plan()
        trace.decision = s.get("decision") or Decision()
        trace.evidence = list(s.get("evidence", []))
        trace.answer = responder.drop_dead_citations(s.get("answer", ""), len(trace.evidence))
        trace.citations = responder.parse_citations(trace.answer, trace.evidence)
        trace.review = Review(verdict=s.get("verdict", "PASS"), feedback=s.get("feedback", ""),
                              rewrites=s.get("rewrites", 0), raw=s.get("review_raw", ""))
        trace.steps = ctx.steps

    def _run_tool(self, trace: TurnTrace, ctx: TurnContext) -> None:
        call, t0 = trace.decision.tool_call, time.time()
        tool = self.tools.get(call["name"])
        record: dict[str, Any] = {"name": call["name"], "arguments": call["arguments"]}
        try:
            result = tool.invoke(call["arguments"])
            record["result"] = str(result)
            trace.answer = f"{trace.answer}\n\n[{call['name']}] {result}".strip()
        except Exception as e:
            record["error"] = f"{type(e).__name__}: {e}"
        trace.tool_calls.append(record)
        ctx.record("tools", t0, record.get("result") or record.get("error", ""), **record)
