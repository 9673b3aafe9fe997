"""Fixtures for the agent-chain unit tests: a recording knowledge base (the real one is used in
tests/multi_agent/test_assistant.py) and the scripted chat model."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from multi_agent.llm.scripted import ScriptedChatModel


@dataclass
class FakeHit:
    chunk_id: str
    text: str
    source: str
    page: int | None = None
    start: int = 0
    end: int = 0
    score: float = 1.0
    scores: dict = field(default_factory=dict)
    rank: int = 1


class RecordingKB:
    """Answers every search with fixed passages and records the queries it was given."""

    def __init__(self, n_hits: int = 3, has_files: bool = True):
        self.queries: list[str] = []
        self.has_files = has_files
        self.hits = [FakeHit(f"doc{i}.md#0", f"passage {i} about cats", f"doc{i}.md", page=i)
                     for i in range(1, n_hits + 1)]

    def files(self):
        return [{"path": h.source} for h in self.hits] if self.has_files else []

    def has_documents(self):
        return self.has_files

    def search(self, query, k=5, rerank=True):
        self.queries.append(query)
        return self.hits[:k]


@pytest.fixture
def kb():
    return RecordingKB()


@pytest.fixture
def scripted():
    def make(**rules):
        return ScriptedChatModel(rules=rules)
    return make


@pytest.fixture
def make_hit():
    return FakeHit


@pytest.fixture
def make_kb():
    return RecordingKB
