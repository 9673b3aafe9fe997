"""What one turn of the chain produced: every step's output, timings, evidence and citations.

The GUI and the MCP server only display these; nothing here talks to a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Plan:
    steps: list[str] = field(default_factory=list)   # 3-5 short steps
    needs_kb: bool = False
    raw: str = ""                                    # the model's own text
    parsed: bool = True                              # False: model output unusable, fallback plan


@dataclass
class Decision:
    retrieve: bool = False
    query: str = ""
    reason: str = ""
    tool_call: dict[str, Any] | None = None          # {"name", "arguments"} the Manager asked for
    raw: str = ""


@dataclass
class Review:
    verdict: str = "PASS"                            # "PASS" | "RETRY"
    feedback: str = ""
    rewrites: int = 0                                # answers rewritten after a RETRY (cap: 1)
    raw: str = ""


@dataclass
class StepTrace:
    name: str                                        # planner | manager | knowledge | responder | reviewer | tools
    output: str                                      # display text
    started: float                                   # time.time() at start
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)  # structured output (plan, decision, hits, ...)


@dataclass
class TurnTrace:
    question: str
    images: list[str] = field(default_factory=list)
    answer: str = ""
    plan: Plan = field(default_factory=Plan)
    decision: Decision = field(default_factory=Decision)
    evidence: list[Any] = field(default_factory=list)     # rag Hits; evidence[i] is citation [i+1]
    citations: list[dict[str, Any]] = field(default_factory=list)  # {n, source, page, chunk_id}
    review: Review = field(default_factory=Review)
    steps: list[StepTrace] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {name, arguments, result|error}
    cancelled: bool = False
    error: str | None = None
    started: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (hits become dicts)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["plan"] = dataclasses.asdict(self.plan)
        d["decision"] = dataclasses.asdict(self.decision)
        d["review"] = dataclasses.asdict(self.review)
        d["steps"] = [dataclasses.asdict(s) for s in self.steps]
        d["evidence"] = [hit_to_dict(h, i + 1) for i, h in enumerate(self.evidence)]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TurnTrace":
        """The inverse of :meth:`to_dict` (a saved conversation reopened); evidence comes back as Hits."""
        from multi_agent.rag.schema import Hit

        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["plan"] = Plan(**d.get("plan") or {})
        d["decision"] = Decision(**d.get("decision") or {})
        d["review"] = Review(**d.get("review") or {})
        d["steps"] = [StepTrace(**s) for s in d.get("steps") or []]
        d["evidence"] = [Hit(**{k: h.get(k) for k in HIT_FIELDS}) for h in d.get("evidence") or []]
        return cls(**d)


HIT_FIELDS = ("chunk_id", "text", "source", "page", "start", "end", "score", "scores", "rank")


def hit_to_dict(hit: Any, n: int | None = None) -> dict[str, Any]:
    d = {k: getattr(hit, k, None) for k in HIT_FIELDS}
    if d.get("scores") is not None:
        d["scores"] = {k: None if v is None else float(v) for k, v in dict(d["scores"]).items()}
    if d.get("score") is not None:
        d["score"] = float(d["score"])
    if n is not None:
        d["n"] = n
    return d


def cite_label(hit: Any) -> str:
    """``source, p. N`` (page omitted for formats without pages)."""
    page = getattr(hit, "page", None)
    src = getattr(hit, "source", "?")
    return f"{src}, p. {page}" if page not in (None, "") else str(src)
