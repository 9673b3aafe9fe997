"""Manager: decides whether to retrieve, with which query, and whether to call a tool.

Its decision drives the graph: the Knowledge step runs only when ``retrieve`` is true and
searches with ``query``. The user's "no knowledge base" switch and an empty knowledge base
override the model.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Sequence

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import BaseTool

from multi_agent.agents import prompts
from multi_agent.agents.parsing import as_bool, clean_line, find_json_object, looks_like_text
from multi_agent.agents.planner import plan_lines
from multi_agent.agents.trace import Decision, Plan
from multi_agent.llm.base import TokenCallback, generate_text

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
MAX_QUERY_CHARS = 300


def describe_tools(tools: Sequence[BaseTool]) -> str:
    """``- save_session_summary(title?: string): ...``: short enough for a 4B model's prompt."""
    if not tools:
        return "(none)"
    lines = []
    for t in tools:
        required = set((t.tool_call_schema.model_json_schema() if t.args_schema else {}).get("required", []))
        args = ", ".join(f"{name}{'' if name in required else '?'}: {_type_name(spec)}"
                         for name, spec in t.args.items())
        lines.append(f"- {t.name}({args}): {t.description}")
    return "\n".join(lines)


def _type_name(spec: dict[str, Any]) -> str:
    if "type" in spec:
        return str(spec["type"])
    kinds = [s.get("type") for s in spec.get("anyOf", []) if s.get("type") not in (None, "null")]
    return "|".join(kinds) or "any"


HISTORY_TURNS = 2       # earlier turns shown, so "and what rank?" becomes a standalone query
HISTORY_CHARS = 200


def decide(model: BaseChatModel, question: str, plan: Plan, lang: str, *, use_kb: bool,
           kb_available: bool, tools: Sequence[BaseTool] = (), history: Sequence[tuple[str, str]] = (),
           cancel: threading.Event | None = None, max_new_tokens: int = 160,
           on_token: TokenCallback | None = None) -> Decision:
    labels = prompts.LABELS[lang]
    system = prompts.MANAGER[lang].format(tools=describe_tools(tools))
    user = ""
    if history:
        user = f"{labels['earlier']}:\n" + "\n".join(
            f"Q: {clean_line(q, HISTORY_CHARS)}\nA: {clean_line(a, HISTORY_CHARS)}"
            for q, a in history[-HISTORY_TURNS:]) + "\n\n"
    user += (f"{labels['question']}: {question}\n{labels['plan']}:\n{plan_lines(plan.steps)}\n"
             f"needs_kb: {str(plan.needs_kb).lower()}")
    text = generate_text(model, [SystemMessage(system), HumanMessage(user)],
                         on_token=on_token, cancel=cancel, max_new_tokens=max_new_tokens,
                         temperature=0.0)   # structured output: always greedy
    return parse_decision(text, question, plan, use_kb=use_kb, kb_available=kb_available,
                          tool_names={t.name for t in tools})


def parse_decision(text: str, question: str, plan: Plan, *, use_kb: bool = True,
                   kb_available: bool = True, tool_names: set[str] = frozenset()) -> Decision:
    obj = find_json_object(text) or {}
    retrieve = as_bool(obj.get("retrieve"))
    reason = clean_line(obj.get("reason", ""), 300) if isinstance(obj.get("reason"), str) else ""
    if retrieve is None:
        retrieve, reason = plan.needs_kb, "model gave no usable decision; following the plan's needs_kb"
    query = obj.get("query") if isinstance(obj.get("query"), str) else ""
    query = clean_line(query, MAX_QUERY_CHARS)
    if not query or not looks_like_text(query):
        query = clean_line(question, MAX_QUERY_CHARS)    # the question itself is a good default query
    if not use_kb:
        retrieve, reason = False, "knowledge base switched off by the user"
    elif not kb_available:
        retrieve, reason = False, "knowledge base is empty"
    return Decision(retrieve=bool(retrieve), query=query, reason=reason,
                    tool_call=_tool_call(obj, text, tool_names), raw=text)


def _tool_call(obj: dict[str, Any], text: str, tool_names: set[str]) -> dict[str, Any] | None:
    """``{"name", "arguments"}`` from the JSON reply or a Qwen-style ``<tool_call>`` block."""
    calls = [obj.get("tool_call")]
    calls += [find_json_object(m.group(1)) for m in _TOOL_CALL.finditer(text)]
    for call in calls:
        if isinstance(call, dict) and call.get("name") in tool_names:
            args = call.get("arguments", call.get("args", {}))
            if isinstance(args, str):
                args = find_json_object(args) or {}
            return {"name": call["name"], "arguments": args if isinstance(args, dict) else {}}
    return None


def format_decision(d: Decision) -> str:
    out = f"retrieve: {'yes' if d.retrieve else 'no'}"
    if d.retrieve:
        out += f"\nquery: {d.query}"
    if d.reason:
        out += f"\nreason: {d.reason}"
    if d.tool_call:
        out += f"\ntool: {d.tool_call['name']}({json.dumps(d.tool_call['arguments'], ensure_ascii=False)})"
    return out
