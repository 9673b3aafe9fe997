"""save_session_summary: write the session (dialogue, plan, evidence, citations) as Markdown.

One function, three doors: :func:`save_session_summary` (called by ``Assistant.save_summary``,
the app's button and the MCP tool) and :func:`make_summary_tool`, a LangChain tool the
Manager can call when the user asks to save or archive the conversation.
Files are ``<reports_dir>/YYYYMMDD-HHMMSS_<slug>.md``; a name is never reused (``-2``, ``-3``...).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from multi_agent.agents.trace import TurnTrace, cite_label
from vlft.utils.io import atomic_write

SLUG_CHARS = 48
EXCERPT_CHARS = 400
from vlft.data.vocab import CJK_RE as _CJK  # noqa: E402 (one CJK class for the project)


def slugify(text: str, max_len: int = SLUG_CHARS) -> str:
    """ASCII letters/digits and CJK kept, everything else (dots, slashes, spaces) -> '-'."""
    text = unicodedata.normalize("NFKC", text or "")
    chars = [c.lower() if c.isascii() and c.isalnum() else c if _CJK.match(c) else "-" for c in text]
    slug = re.sub(r"-+", "-", "".join(chars)).strip("-")[:max_len].strip("-")
    return slug or "session"


def _reserve(folder: Path, stem: str) -> Path:
    """Create an empty file with a fresh name (O_EXCL: two savers never get the same one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in itertools.count(1):
        path = folder / (f"{stem}.md" if i == 1 else f"{stem}-{i}.md")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def save_session_summary(turns: Sequence[TurnTrace], reports_dir: str | Path, title: str | None = None,
                         now: _dt.datetime | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write the report and return its path. Raises ValueError when there is nothing to save."""
    turns = [t for t in turns if t.question]
    if not turns:
        raise ValueError("save_session_summary: the session has no turns yet; ask a question first")
    now = now or _dt.datetime.now()
    title = " ".join((title or "").split())[:200] or turns[-1].question
    reports_dir = Path(reports_dir).resolve()
    path = _reserve(reports_dir, f"{now:%Y%m%d-%H%M%S}_{slugify(title)}")
    if path.resolve().parent != reports_dir:  # slugify already prevents it; belt and braces
        path.unlink(missing_ok=True)
        raise ValueError(f"save_session_summary: {path} is outside {reports_dir}")
    try:
        with atomic_write(path) as f:
            f.write(render_markdown(turns, title, now, meta))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def render_markdown(turns: Sequence[TurnTrace], title: str, now: _dt.datetime,
                    meta: dict[str, Any] | None = None) -> str:
    last = turns[-1]
    out = [f"# Session summary: {title}", "",
           f"Saved {now:%Y-%m-%d %H:%M:%S} · {len(turns)} turn(s)"
           + "".join(f" · {k}: {v}" for k, v in (meta or {}).items()), ""]
    out += ["## Question", "", last.question, "", "## Answer", "", last.answer or "_(no answer)_", ""]
    out += ["## Plan", ""] + [f"{i}. {s}" for i, s in enumerate(last.plan.steps, 1)]
    d = last.decision
    out += ["", f"Knowledge base needed: {'yes' if last.plan.needs_kb else 'no'}; retrieved: "
            + (f"yes (query: `{d.query}`)" if d.retrieve else f"no ({d.reason or 'not needed'})"), ""]
    out += ["## Dialogue", ""]
    for i, t in enumerate(turns, 1):
        out += [f"### Turn {i}", "", f"**User:** {t.question}"]
        if t.images:
            out += ["", "Images: " + ", ".join(f"`{Path(p).name}`" for p in t.images)]
        out += ["", f"**Assistant:** {t.answer or '_(no answer)_'}", ""]
        if t.citations:
            out += ["Citations: " + "; ".join(f"[{c['n']}] {c['source']}"
                                               + (f", p. {c['page']}" if c.get('page') not in (None, '') else "")
                                               for c in t.citations), ""]
        status = [f"review: {t.review.verdict}"]
        if t.review.rewrites:
            status.append(f"rewritten {t.review.rewrites}x")
        if t.cancelled:
            status.append("cancelled")
        if t.error:
            status.append(f"error: {t.error}")
        out += ["_" + ", ".join(status) + "_", ""]
    out += ["## Evidence", ""]
    any_ev = False
    for i, t in enumerate(turns, 1):
        if not t.evidence:
            continue
        any_ev = True
        cited = {c["n"] for c in t.citations}
        out += [f"### Turn {i}", ""]
        for n, h in enumerate(t.evidence, 1):
            text = " ".join(str(getattr(h, "text", "")).split())
            excerpt = text[:EXCERPT_CHARS] + (" ..." if len(text) > EXCERPT_CHARS else "")
            out += [f"- [{n}] **{cite_label(h)}**{' (cited)' if n in cited else ''}"
                    f" — chunk `{getattr(h, 'chunk_id', '')}`", f"  > {excerpt}"]
        out.append("")
    if not any_ev:
        out += ["_No evidence was retrieved in this session._", ""]
    return "\n".join(out)


class SummaryArgs(BaseModel):
    title: str | None = Field(default=None, description="Short title for the report (optional)")


def make_summary_tool(get_turns: Callable[[], Sequence[TurnTrace]], reports_dir: str | Path,
                      meta: dict[str, Any] | None = None) -> StructuredTool:
    """A LangChain tool bound to one session's history."""
    def _save(title: str | None = None) -> str:
        path = save_session_summary(get_turns(), reports_dir, title=title, meta=meta)
        return f"session summary saved to {path}"

    return StructuredTool.from_function(
        func=_save, name="save_session_summary", args_schema=SummaryArgs,
        description="Save the whole conversation (questions, answers, plan, evidence and citations) "
                    "as a Markdown report and return its path. Use only when the user asks to save, "
                    "export or archive the conversation.")
