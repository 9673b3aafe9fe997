"""Reviewer: PASS, or RETRY with feedback. The graph allows at most one rewrite."""

from __future__ import annotations

import re
import threading
from typing import Any, Sequence

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from multi_agent.agents import prompts
from multi_agent.agents.knowledge import format_evidence
from multi_agent.agents.parsing import clean_line
from multi_agent.llm.base import TokenCallback, generate_text

_VERDICT = re.compile(r"\b(PASS|RETRY)\b\s*[:：\-]?\s*(.*)", re.S | re.I)


def review(model: BaseChatModel, question: str, evidence: Sequence[Any], answer: str, lang: str,
           cancel: threading.Event | None = None, max_new_tokens: int = 96,
           on_token: TokenCallback | None = None) -> tuple[str, str, str]:
    """(verdict, feedback, raw model text)."""
    if not answer.strip():
        return "RETRY", "the answer is empty", ""
    labels = prompts.LABELS[lang]
    ev = format_evidence(evidence) if evidence else labels["no_evidence"]
    user = f"{labels['question']}: {question}\n\n{labels['evidence']}:\n{ev}\n\n{labels['answer']}:\n{answer}"
    text = generate_text(model, [SystemMessage(prompts.REVIEWER[lang]), HumanMessage(user)],
                         on_token=on_token, cancel=cancel, max_new_tokens=max_new_tokens,
                         temperature=0.0)   # structured output: always greedy
    verdict, feedback = parse_review(text)
    return verdict, feedback, text


def parse_review(text: str) -> tuple[str, str]:
    """The first PASS/RETRY word wins. Unreadable output counts as PASS: a rewrite costs a full
    generation and an unreadable review gives the Responder nothing to fix."""
    m = _VERDICT.search(text)
    if m is None:
        return "PASS", "reviewer output unreadable; answer kept"
    verdict = m.group(1).upper()
    feedback = clean_line(m.group(2), 500) if verdict == "RETRY" else ""
    return verdict, feedback
