"""save_session_summary: file name, never overwriting, atomic write, contents, and the LangChain tool."""

from __future__ import annotations

import datetime as dt
import pytest

from multi_agent.agents.trace import Decision, Plan, Review, TurnTrace
from multi_agent.rag import Hit
from multi_agent.tools import make_summary_tool, save_session_summary, slugify

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


def turns():
    ev = [Hit("paper.pdf#3", "MoE-LoRA routes each token to two of four experts.", "paper.pdf", 2, 0, 50, 1.0,
              rank=1),
          Hit("notes.md#0", "Rank 8 per expert.", "notes.md", None, 0, 18, 1.0, rank=1)]
    t1 = TurnTrace(question="How many experts does MoE-LoRA use?", answer="Four experts [1], rank 8 [2].",
                   plan=Plan(steps=["Search the paper", "Read the method", "Answer"], needs_kb=True),
                   decision=Decision(retrieve=True, query="MoE-LoRA experts"), evidence=ev,
                   citations=[{"n": 1, "source": "paper.pdf", "page": 2, "chunk_id": "paper.pdf#3"},
                              {"n": 2, "source": "notes.md", "page": None, "chunk_id": "notes.md#0"}],
                   review=Review("PASS", "", 1))
    t2 = TurnTrace(question="小苔藓什么时候保送到厦门大学？", answer="9月25日。", images=["/x/photo.jpg"],
                   plan=Plan(steps=["理解问题", "回答"], needs_kb=False),
                   decision=Decision(retrieve=False, reason="knowledge base switched off by the user"))
    return [t1, t2]


@pytest.mark.parametrize("text, slug", [
    ("How many experts?", "how-many-experts"),
    ("../../etc/passwd", "etc-passwd"),
    ("小苔藓 保送/厦门大学", "小苔藓-保送-厦门大学"),
    ("..", "session"), ("", "session"), ("C:\\Windows\\x.md", "c-windows-x-md"),
])
def test_slugify_is_safe(text, slug):
    assert slugify(text) == slug


def test_summary_contents(tmp_path):
    path = save_session_summary(turns(), tmp_path, now=NOW, meta={"model": "tiny"})
    assert path.parent == tmp_path and path.name == "20260102-030405_小苔藓什么时候保送到厦门大学.md"
    md = path.read_text(encoding="utf-8")
    for expected in [
        "# Session summary: 小苔藓什么时候保送到厦门大学？", "model: tiny", "2 turn(s)",
        "## Question\n\n小苔藓什么时候保送到厦门大学？", "## Answer\n\n9月25日。",
        "1. 理解问题", "retrieved: no (knowledge base switched off by the user)",
        "### Turn 1", "**User:** How many experts does MoE-LoRA use?", "**Assistant:** Four experts [1], rank 8 [2].",
        "Citations: [1] paper.pdf, p. 2; [2] notes.md", "rewritten 1x", "Images: `photo.jpg`",
        "- [1] **paper.pdf, p. 2** (cited) — chunk `paper.pdf#3`",
        "> MoE-LoRA routes each token to two of four experts.",
    ]:
        assert expected in md, expected
    assert md.index("### Turn 1") < md.index("### Turn 2") < md.index("## Evidence")


def test_never_overwrites_and_leaves_no_temp_files(tmp_path):
    paths = [save_session_summary(turns(), tmp_path, title="Same title", now=NOW) for _ in range(3)]
    assert [p.name for p in paths] == ["20260102-030405_same-title.md", "20260102-030405_same-title-2.md",
                                       "20260102-030405_same-title-3.md"]
    assert all(p.stat().st_size > 100 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_traversal_in_the_title_stays_in_the_reports_folder(tmp_path):
    reports = tmp_path / "reports"
    path = save_session_summary(turns(), reports, title="../../../tmp/evil", now=NOW)
    assert path.parent == reports.resolve() and path.name == "20260102-030405_tmp-evil.md"
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]


def test_empty_session_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no turns yet"):
        save_session_summary([], tmp_path)
    assert not any(tmp_path.iterdir())


def test_langchain_tool_writes_the_session(tmp_path):
    history = turns()
    tool = make_summary_tool(lambda: history, tmp_path)
    assert tool.name == "save_session_summary" and "title" in tool.args
    out = tool.invoke({"title": "experts"})
    (path,) = tmp_path.glob("*_experts.md")
    assert str(path) in out and "MoE-LoRA" in path.read_text(encoding="utf-8")
