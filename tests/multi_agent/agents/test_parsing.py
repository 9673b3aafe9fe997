"""Lenient parsing of the agents' replies, including the garbage a random-weight model emits."""

from __future__ import annotations

from multi_agent.agents.manager import parse_decision
from multi_agent.agents.planner import MAX_STEPS, MIN_STEPS, parse_plan
from multi_agent.agents.prompts import language_of
from multi_agent.agents.responder import parse_citations
from multi_agent.agents.reviewer import parse_review
from multi_agent.agents.trace import Plan


def test_plan_from_json_in_fences_and_prose():
    text = 'Sure!\n```json\n{"steps": ["Find the doc", "Read it", "Answer"], "needs_kb": "yes"}\n```'
    p = parse_plan(text)
    assert p.steps == ["Find the doc", "Read it", "Answer"] and p.needs_kb is True and p.parsed


def test_plan_from_numbered_list_is_padded_to_three_and_capped_at_five():
    p = parse_plan("1. Look at the image\n2) Answer\nneeds_kb: no")
    assert len(p.steps) == MIN_STEPS and p.steps[:2] == ["Look at the image", "Answer"]
    assert p.needs_kb is False
    many = parse_plan('{"steps": ["go a", "go b", "go c", "go d", "go e", "go f", "go g"], "needs_kb": false}')
    assert len(many.steps) == MAX_STEPS


def test_garbage_plan_falls_back_and_follows_the_knowledge_base():
    junk = "ĠĠ)(*&^ 12 34 ..,, <|im_end|> ### $$"
    with_kb, without_kb = parse_plan(junk, "en", kb_available=True), parse_plan(junk, "en", kb_available=False)
    assert not with_kb.parsed and len(with_kb.steps) == 3 and with_kb.needs_kb
    assert not without_kb.needs_kb and "knowledge base" not in " ".join(without_kb.steps)


def test_chinese_plan_and_language_detection():
    assert language_of("小苔藓什么时候保送到厦门大学？") == "zh"
    assert language_of("What is MoE-LoRA?") == "en"
    p = parse_plan('{"steps": ["查找资料", "阅读", "回答"], "needs_kb": "是"}', "zh")
    assert p.steps == ["查找资料", "阅读", "回答"] and p.needs_kb


def test_decision_user_switch_and_empty_kb_override_the_model():
    plan = Plan(steps=["a", "b", "c"], needs_kb=True)
    text = '{"retrieve": true, "query": "moe lora experts", "reason": "docs"}'
    d = parse_decision(text, "q?", plan)
    assert d.retrieve and d.query == "moe lora experts"
    assert not parse_decision(text, "q?", plan, use_kb=False).retrieve
    assert not parse_decision(text, "q?", plan, kb_available=False).retrieve


def test_decision_fallbacks_and_tool_calls():
    plan = Plan(steps=["a"], needs_kb=True)
    d = parse_decision("@@@ ### 123", "How many experts?", plan)
    assert d.retrieve is True and d.query == "How many experts?"          # follows the plan
    d = parse_decision('{"retrieve": false, "tool_call": {"name": "save_session_summary", '
                       '"arguments": {"title": "x"}}}', "save it", plan, tool_names={"save_session_summary"})
    assert d.tool_call == {"name": "save_session_summary", "arguments": {"title": "x"}}
    qwen_style = ('{"retrieve": false}\n<tool_call>\n{"name": "save_session_summary", "arguments": {}}\n'
                  '</tool_call>')
    assert parse_decision(qwen_style, "q", plan, tool_names={"save_session_summary"}).tool_call["name"] \
        == "save_session_summary"
    assert parse_decision(qwen_style, "q", plan, tool_names=set()).tool_call is None   # unknown tool ignored


def test_review_verdicts():
    assert parse_review("PASS") == ("PASS", "")
    assert parse_review("RETRY: cite the evidence") == ("RETRY", "cite the evidence")
    assert parse_review("Verdict - retry：请引用资料")[0] == "RETRY"
    assert parse_review("?? ## !!")[0] == "PASS"        # unreadable -> keep the answer


def test_citations_map_to_evidence_and_out_of_range_are_dropped(make_hit):
    ev = [make_hit(f"d{i}#0", "t", f"d{i}.pdf", page=i) for i in (1, 2, 3)]
    cits = parse_citations("A [2]. B [1, 3][2] C 【3】 D [7] E [0]", ev)
    assert [c["n"] for c in cits] == [2, 1, 3]
    assert cits[0] == {"n": 2, "source": "d2.pdf", "page": 2, "chunk_id": "d2#0"}
    assert parse_citations("nothing cited [1]", []) == []


def test_tools_are_described_compactly_for_the_manager(tmp_path):
    from multi_agent.agents.manager import describe_tools
    from multi_agent.tools import make_summary_tool
    text = describe_tools([make_summary_tool(list, tmp_path)])
    assert text.startswith("- save_session_summary(title?: string): Save the whole conversation")
    assert describe_tools([]) == "(none)"
