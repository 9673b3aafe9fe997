"""A deterministic chat model for tests and offline demos: rule-based answers, recorded prompts.

Rules map an agent role ("Planner", "Manager", "Responder", "Reviewer": read from the system
prompt's "You are the <Role>") or any other substring of the system prompt to an answer: a string, a list of strings
(used in turn, the last one repeats) or a callable ``f(messages) -> str``. Without a matching
rule the built-in demo answers apply, so ``--backend scripted`` runs the whole chain.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable, Iterator

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field, PrivateAttr

from multi_agent.llm.base import StreamingChatModel, message_text

SCRIPTED_NOTICE = "Scripted backend: canned answers for tests and demos, no model loaded."
_TOKEN = re.compile(r"\s*\S+|\s+")
ROLES = ("Planner", "Manager", "Responder", "Reviewer")
_ROLE = re.compile(r"(?:You are the|你是多模态助手的)\s*(Planner|Manager|Responder|Reviewer)")


def role_of(messages: list[BaseMessage]) -> str | None:
    """The agent a prompt belongs to, from its system message."""
    if not messages or messages[0].type != "system":
        return None
    m = _ROLE.search(message_text(messages[0]))
    return m.group(1) if m else None


def _demo_answer(messages: list[BaseMessage]) -> str:
    role = role_of(messages)
    user = message_text(messages[-1]) if messages else ""
    if role == "Planner":
        return ('{"steps": ["Read the question and any image", "Search the knowledge base for '
                'relevant passages", "Answer from the evidence with citations"], "needs_kb": true}')
    if role == "Manager":
        return '{"retrieve": true, "query": "", "reason": "the plan needs the knowledge base"}'
    if role == "Reviewer":
        return "PASS"
    if role == "Responder":
        if "\n[1] (" in user:                      # numbered evidence was given
            return "According to the knowledge base [1], this is the answer."
        return "This is the answer."
    return "OK"


class ScriptedChatModel(StreamingChatModel):
    """Canned, deterministic answers; ``prompts`` records every call's messages."""

    rules: dict[str, Any] = Field(default_factory=dict)
    responses: list[str] = Field(default_factory=list)   # FIFO queue, used before rules
    token_delay: float = 0.0                              # seconds between streamed tokens
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _used: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def notice(self) -> str:
        return SCRIPTED_NOTICE

    def calls(self, role: str) -> list[list[BaseMessage]]:
        """Recorded prompts of one agent (``"Planner"``, ``"Manager"``, ...)."""
        return [p for p in self.prompts if role_of(p) == role]

    def answer_for(self, messages: list[BaseMessage]) -> str:
        with self._lock:
            self.prompts.append(list(messages))
            if self.responses:
                return self.responses.pop(0)
            system = message_text(messages[0]) if messages and messages[0].type == "system" else ""
            haystack = system or "\n".join(message_text(m) for m in messages)
            role = role_of(messages)
            for key, rule in self.rules.items():
                if (key == role) if key in ROLES else (key in haystack):
                    return self._apply(key, rule, messages)
        return _demo_answer(messages)

    def _apply(self, key: str, rule: Any, messages: list[BaseMessage]) -> str:
        if callable(rule):
            return str(rule(messages))
        if isinstance(rule, (list, tuple)):
            i = self._used.get(key, 0)
            self._used[key] = i + 1
            return rule[min(i, len(rule) - 1)]
        return str(rule)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                stop_event: threading.Event | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        text = self.answer_for(messages)
        for tok in _TOKEN.findall(text):
            if stop_event is not None and stop_event.is_set():
                return
            if self.token_delay:
                time.sleep(self.token_delay)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=tok))
            if run_manager:
                run_manager.on_llm_new_token(tok, chunk=chunk)
            yield chunk


ScriptRule = Callable[[list[BaseMessage]], str]
