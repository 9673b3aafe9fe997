"""Planner: 3-5 steps and whether the knowledge base is needed."""

from __future__ import annotations

import re
import threading
from typing import Sequence

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from multi_agent.agents import prompts
from multi_agent.agents.parsing import as_bool, clean_line, find_json_object, looks_like_text
from multi_agent.agents.trace import Plan
from multi_agent.llm.base import TokenCallback, generate_text

MIN_STEPS, MAX_STEPS = 3, 5
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)、:：]|[-*•])\s*(.+)$")
_NEEDS_KB = re.compile(r"needs?_?kb\W*(true|false|yes|no)|需要知识库\W*(是|否)", re.I)


def plan(model: BaseChatModel, question: str, n_images: int, lang: str, kb_available: bool,
         cancel: threading.Event | None = None, max_new_tokens: int = 192,
         on_token: TokenCallback | None = None) -> Plan:
    labels = prompts.LABELS[lang]
    user = f"{labels['question']}: {question}"
    if n_images:
        user += "\n" + labels["images"].format(n=n_images)
    text = generate_text(model, [SystemMessage(prompts.PLANNER[lang]), HumanMessage(user)],
                         on_token=on_token, cancel=cancel, max_new_tokens=max_new_tokens,
                         temperature=0.0)   # structured output: always greedy
    return parse_plan(text, lang, kb_available)


def parse_plan(text: str, lang: str = "en", kb_available: bool = True) -> Plan:
    """JSON first, then a numbered/bulleted list; fallback steps when neither is usable.

    ``needs_kb`` defaults to "the knowledge base has documents" when the model did not say.
    """
    obj = find_json_object(text)
    steps: list[str] = []
    needs_kb = None
    if obj is not None:
        raw_steps = obj.get("steps") or obj.get("plan") or []
        if isinstance(raw_steps, str):
            raw_steps = [raw_steps]
        if isinstance(raw_steps, list):
            steps = [clean_line(s) for s in raw_steps if isinstance(s, (str, int, float))]
        needs_kb = as_bool(obj.get("needs_kb", obj.get("use_kb")))
    if not steps:
        steps = [clean_line(m.group(1)) for line in text.splitlines() if (m := _LIST_ITEM.match(line))]
    if needs_kb is None and (m := _NEEDS_KB.search(text)):
        needs_kb = as_bool(m.group(1) or m.group(2))
    steps = [s for s in steps if s and looks_like_text(s)]
    parsed = len(steps) >= 1
    fallback = prompts.FALLBACK_STEPS[lang if (needs_kb if needs_kb is not None else kb_available)
                                      else f"{lang}_nokb"]
    for s in fallback:                      # pad a short plan with the generic steps
        if len(steps) >= MIN_STEPS:
            break
        if s not in steps:
            steps.append(s)
    return Plan(steps=steps[:MAX_STEPS],
                needs_kb=bool(kb_available if needs_kb is None else needs_kb),
                raw=text, parsed=parsed)


def format_plan(p: Plan) -> str:
    lines = [f"{i}. {s}" for i, s in enumerate(p.steps, 1)]
    lines.append(f"needs_kb: {'yes' if p.needs_kb else 'no'}" + ("" if p.parsed else " (fallback plan)"))
    return "\n".join(lines)


def plan_lines(steps: Sequence[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
