"""Responder: answers from the plan, the evidence, the image(s) and the session's history.

Citations are numbers in brackets, [n], mapping to ``evidence[n-1]``; numbers outside
1..len(evidence) are dropped when the answer is parsed.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Sequence

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from multi_agent.agents import prompts
from multi_agent.agents.knowledge import format_evidence
from multi_agent.agents.planner import plan_lines
from multi_agent.agents.trace import Plan
from multi_agent.llm.base import TokenCallback, generate_text, user_message

# [1], [1, 3], [1][2], 【2】, [1，2]
_CITE = re.compile(r"[\[【]\s*(\d{1,3}(?:\s*[,，、;]\s*\d{1,3})*)\s*[\]】]")


def build_messages(question: str, images: Sequence[Any], plan: Plan, evidence: Sequence[Any],
                   history: Sequence[tuple[str, str]], lang: str, draft: str | None = None,
                   feedback: str | None = None) -> list[BaseMessage]:
    labels = prompts.LABELS[lang]
    msgs: list[BaseMessage] = [SystemMessage(prompts.RESPONDER[lang])]
    for q, a in history:                       # earlier turns, text only (images cost tokens)
        msgs += [HumanMessage(q), AIMessage(a)]
    ev = format_evidence(evidence) if evidence else labels["no_evidence"]
    text = (f"{labels['plan']}:\n{plan_lines(plan.steps)}\n\n{labels['evidence']}:\n{ev}\n\n"
            f"{labels['question']}: {question}")
    if draft is not None:
        text += (f"\n\n{labels['draft']}:\n{draft}\n\n{labels['feedback']}: {feedback or ''}\n"
                 f"{labels['rewrite']}")
    msgs.append(user_message(text, images))
    return msgs


def respond(model: BaseChatModel, question: str, images: Sequence[Any], plan: Plan,
            evidence: Sequence[Any], history: Sequence[tuple[str, str]], lang: str, *,
            draft: str | None = None, feedback: str | None = None,
            on_token: TokenCallback | None = None, cancel: threading.Event | None = None,
            max_new_tokens: int = 512, temperature: float = 0.0) -> str:
    msgs = build_messages(question, images, plan, evidence, history, lang, draft, feedback)
    return tidy_answer(generate_text(model, msgs, on_token=on_token, cancel=cancel,
                                     max_new_tokens=max_new_tokens, temperature=temperature))


def parse_citations(answer: str, evidence: Sequence[Any]) -> list[dict[str, Any]]:
    """``[{n, source, page, chunk_id}]`` for each in-range number cited, in order of first use."""
    seen: list[int] = []
    for m in _CITE.finditer(answer):
        for num in re.split(r"\s*[,，、;]\s*", m.group(1)):
            n = int(num)
            if 1 <= n <= len(evidence) and n not in seen:
                seen.append(n)
    return [{"n": n, "source": getattr(evidence[n - 1], "source", None),
             "page": getattr(evidence[n - 1], "page", None),
             "chunk_id": getattr(evidence[n - 1], "chunk_id", None)} for n in seen]


def drop_dead_citations(answer: str, n_evidence: int) -> str:
    """Remove citation numbers outside 1..n_evidence (``[9]`` with 5 passages, or any number when
    nothing was retrieved), so neither the chat nor the report shows links that lead nowhere."""
    def fix(m: re.Match) -> str:
        nums = [x for x in re.split(r"\s*[,，、;]\s*", m.group(1)) if 1 <= int(x) <= n_evidence]
        if not nums:
            return ""
        return m.group(0) if len(nums) == len(re.split(r"\s*[,，、;]\s*", m.group(1))) \
            else "[" + ", ".join(nums) + "]"

    out = _CITE.sub(fix, answer)
    return re.sub(r"[ \t]+([.,;:!?。，；：！？])", r"\1", out) if out != answer else out


def tidy_answer(text: str) -> str:
    """Model output with runs of blank lines collapsed (a tiny or confused model can emit hundreds)."""
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip()


class BlankLineFilter:
    """Wraps a token callback so the stream matches :func:`tidy_answer`: leading whitespace and
    runs of blank lines are held back; at most one blank line is passed on before the next text."""

    def __init__(self, on_token: TokenCallback):
        self.on_token, self.held, self.started = on_token, "", False

    def __call__(self, text: str) -> None:
        text = self.held + text
        body = text.rstrip()
        if not body.strip():
            self.held = text
            return
        self.held = text[len(body):]
        if not self.started:
            body, self.started = body.lstrip(), True
        self.on_token(re.sub(r"\n\s*\n(\s*\n)+", "\n\n", body))
