"""LLM-as-judge: a model grades each caption 1-5 against the human references.

Two backends behind one interface (``Judge.complete(prompt, image) -> str``):

* ``local``: the evaluated base model itself (a ``VLGenerator``; it also sees the image);
* ``openai``: any OpenAI-compatible chat endpoint (vLLM, Ollama, LM Studio, DeepSeek, ...) given by
  ``--judge-url`` / ``--judge-model``; the API key comes from ``--judge-api-key`` or $OPENAI_API_KEY.

The prompt template and every raw answer are kept in the report, so a score can be audited.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from vlft.errors import UserError

log = logging.getLogger(__name__)

JUDGE_PROMPT = """You are grading an image caption.
Reference captions written by people for the image:
{references}

Candidate caption:
{candidate}

How well does the candidate describe the same image as the references (correct objects, \
actions and attributes; nothing invented)? Score from 1 (wrong or unrelated) to 5 (as good as \
the references). Reply with JSON only: {{"score": <1-5>, "reason": "<one short sentence>"}}"""

_JSON = re.compile(r"\{[^{}]*\}", re.S)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)")


class JudgeError(UserError, RuntimeError):
    """The judge backend cannot be used (unreachable endpoint, bad settings): one line."""


class Judge(Protocol):
    name: str

    def complete(self, prompt: str, image: Any | None = None) -> str: ...


def build_prompt(candidate: str, references: Sequence[str], template: str = JUDGE_PROMPT) -> str:
    refs = "\n".join(f"- {r}" for r in references)
    return template.format(references=refs, candidate=candidate or "(empty)")


def parse_score(text: str) -> int | None:
    """The 1-5 score in a judge answer: a JSON ``score`` field, else the first number (rounded half up)."""
    for m in _JSON.finditer(text or ""):
        try:
            val = json.loads(m.group(0)).get("score")
            if isinstance(val, (int, float, str)) and str(val).strip().isdigit() and 1 <= int(val) <= 5:
                return int(val)
        except (ValueError, AttributeError):
            continue
    m = _NUMBER.search(text or "")
    if m is None or not 1 <= float(m.group(1)) <= 5:
        return None
    return int(float(m.group(1)) + 0.5)


# -- backends ---------------------------------------------------------------------------------------
class LocalJudge:
    """The local model as judge (sees the image as well as the text)."""

    def __init__(self, generator, max_new_tokens: int = 96):
        self.generator = generator
        self.max_new_tokens = max_new_tokens
        self.name = f"local:{generator.model_dir}"

    def complete(self, prompt: str, image: Any | None = None) -> str:
        content: list[dict] = [{"type": "image", "image": image}] if image is not None else []
        content.append({"type": "text", "text": prompt})
        return self.generator.generate([{"role": "user", "content": content}],
                                       max_new_tokens=self.max_new_tokens)


class OpenAIJudge:
    """An OpenAI-compatible ``/chat/completions`` endpoint (text only: references carry the image)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0,
                 max_tokens: int = 128):
        try:
            from openai import OpenAI
        except ImportError:
            raise JudgeError("--judge-url needs the 'openai' package (pip install openai)") from None
        if not model:
            raise JudgeError("--judge-model: give the model name the endpoint at --judge-url serves")
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # local servers accept any key
        self.client = OpenAI(base_url=url, api_key=key, timeout=timeout_s, max_retries=1)
        self.model, self.url, self.max_tokens = model, url, max_tokens
        self.name = f"openai:{model}@{url}"

    def complete(self, prompt: str, image: Any | None = None) -> str:
        import openai

        try:
            r = self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}],
                temperature=0, max_tokens=self.max_tokens)
        except openai.APIError as e:  # unreachable, auth, unknown model, rate limit, 5xx: judging stops
            raise JudgeError(f"judge endpoint {self.url}: {e.__class__.__name__}: {e}") from None
        return r.choices[0].message.content or ""


# -- scoring ----------------------------------------------------------------------------------------
@dataclass
class JudgeResult:
    mean: float | None = None
    n_scored: int = 0
    n_unparsed: int = 0
    items: list[dict] = field(default_factory=list)  # {"id", "prompt", "answer", "score"}

    def to_dict(self) -> dict:
        return {"mean": self.mean, "n_scored": self.n_scored, "n_unparsed": self.n_unparsed,
                "items": self.items}


def judge_rows(judge: Judge, rows: Sequence[dict], template: str = JUDGE_PROMPT, with_image: bool = True,
               progress: Callable[[int], None] | None = None) -> JudgeResult:
    """Score each row ({"id", "prediction", "references", "image"?}); unparsable answers are counted."""
    res = JudgeResult()
    for row in rows:
        prompt = build_prompt(row["prediction"], row["references"], template)
        image = row.get("image") if with_image and isinstance(row.get("image"), str) else None
        answer = judge.complete(prompt, image)
        score = parse_score(answer)
        res.items.append({"id": row["id"], "prompt": prompt, "answer": answer, "score": score})
        if score is None:
            res.n_unparsed += 1
        else:
            res.n_scored += 1
        if progress:
            progress(1)
    scores = [it["score"] for it in res.items if it["score"] is not None]
    res.mean = sum(scores) / len(scores) if scores else None
    return res
