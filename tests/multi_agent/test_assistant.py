"""The Assistant facade end to end: the real local client on the tiny Qwen3-VL, a real
knowledge base (BM25 + FAISS index on disk), citations that map to real chunks, summaries."""

from __future__ import annotations

import re
import threading

import pytest

from multi_agent.assistant import Assistant, AssistantConfig
from multi_agent.llm.base import message_text
from multi_agent.llm.scripted import ScriptedChatModel
from vlft.config import ConfigError

DOCS = {
    "moe.md": "# MoE-LoRA\n\nThe MoE-LoRA adapter mixes four LoRA experts with a learned router. "
              "Each expert has rank 8 and the router picks two experts per token.\n",
    "news.txt": "小苔藓于今年9月25日保送到厦门大学。她喜欢研究多模态大模型。\n",
    "cats.txt": "Cats sleep about sixteen hours a day. They are crepuscular: most active at dawn and dusk.\n",
}
PDF_PAGE2 = "The reviewer agent may ask for one rewrite of the answer."


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory):
    from fpdf import FPDF
    d = tmp_path_factory.mktemp("kb")
    for name, text in DOCS.items():
        (d / name).write_text(text, encoding="utf-8")
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in ("The planner writes three to five steps.", PDF_PAGE2):
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    pdf.output(str(d / "agents.pdf"))
    return d


@pytest.fixture(scope="module")
def kb(kb_dir):
    from multi_agent.rag import KnowledgeBase, RagConfig
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None))
    report = kb.index()
    assert report.added == 4, report.summary()
    return kb


def cite_everything(messages):
    """A Responder that cites passages 1 and 2, plus an out-of-range number."""
    return "Four experts [1], see also [2] and [99]."


def test_end_to_end_on_the_tiny_local_model(tiny_model_dir, kb_dir, kb, tmp_path, coco_sample_dir):
    # Sampled: greedy decoding of random weights repeats whitespace, which the stream now holds back.
    cfg = AssistantConfig(model_dir=tiny_model_dir, kb_dir=kb_dir, reports_dir=tmp_path, max_new_tokens=16,
                          use_rerank=False, temperature=1.0)
    a = Assistant(cfg, kb=kb)
    assert "tiny random-weight" in a.notice
    tokens, steps = [], []
    image = sorted((coco_sample_dir / "images").glob("*.jpg"))[0]
    trace = a.ask("How many experts does MoE-LoRA use?", images=[image], on_token=tokens.append,
                  on_step=steps.append)
    assert trace.error is None and not trace.cancelled
    assert tokens, "no streamed tokens"                              # streaming reached the caller
    names = [s.name for s in trace.steps]
    assert names[:5] == ["planner", "manager", "knowledge", "responder", "reviewer"]
    assert [s.name for s in steps] == names
    assert 3 <= len(trace.plan.steps) <= 5                           # garbage from random weights -> fallback
    assert trace.decision.retrieve and trace.evidence                # real hits from the real index
    assert trace.evidence[0].source == "moe.md"
    assert trace.images == [str(image.resolve())]
    assert a.history == [trace]
    assert trace.review.rewrites <= 1
    # a second turn sees the first in its history and still completes
    t2 = a.ask("And what rank?", use_kb=False, on_token=tokens.append)
    assert t2.error is None and not t2.decision.retrieve and len(a.history) == 2


def test_citations_map_to_real_chunks(kb_dir, kb, tmp_path):
    model = ScriptedChatModel(rules={"Responder": cite_everything})
    a = Assistant(AssistantConfig(backend="scripted", kb_dir=kb_dir, reports_dir=tmp_path, use_rerank=False),
                  chat_model=model, kb=kb)
    trace = a.ask("How many experts does MoE-LoRA use?")
    assert [c["n"] for c in trace.citations] == [1, 2]               # [99] dropped
    for c in trace.citations:
        hit = trace.evidence[c["n"] - 1]
        assert (c["source"], c["page"], c["chunk_id"]) == (hit.source, hit.page, hit.chunk_id)
        if hit.page is None:                                         # text file: the chunk is a real span
            assert (kb_dir / hit.source).read_text(encoding="utf-8")[hit.start:hit.end] == hit.text
    assert trace.citations[0]["source"] == "moe.md"
    # the Responder was shown exactly these numbered passages
    prompt = message_text(model.calls("Responder")[0][-1])
    assert f"[1] ({trace.evidence[0].source})" in prompt


def test_pdf_citation_carries_the_page(kb_dir, kb, tmp_path):
    a = Assistant(AssistantConfig(backend="scripted", kb_dir=kb_dir, reports_dir=tmp_path, use_rerank=False),
                  chat_model=ScriptedChatModel(rules={"Responder": "One rewrite at most [1]."}), kb=kb)
    trace = a.ask("How many rewrites may the reviewer agent ask for?")
    (c,) = trace.citations
    assert c["source"] == "agents.pdf" and c["page"] == 2 and PDF_PAGE2[:20] in trace.evidence[0].text


def test_use_kb_false_never_touches_the_knowledge_base(kb_dir, tmp_path):
    a = Assistant(AssistantConfig(backend="scripted", kb_dir=kb_dir, reports_dir=tmp_path))
    trace = a.ask("How many experts does MoE-LoRA use?", use_kb=False)
    assert trace.error is None and trace.evidence == [] and not trace.decision.retrieve
    assert a._kb is None                                             # not even loaded


def test_session_summary_file(kb_dir, kb, tmp_path):
    a = Assistant(AssistantConfig(backend="scripted", kb_dir=kb_dir, reports_dir=tmp_path / "reports",
                                  use_rerank=False),
                  chat_model=ScriptedChatModel(rules={"Responder": cite_everything}), kb=kb)
    with pytest.raises(ValueError, match="no turns yet"):
        a.save_summary()
    a.ask("How many experts does MoE-LoRA use?")
    a.ask("小苔藓什么时候保送到厦门大学？")
    path = a.save_summary("MoE 与 新闻")
    assert path.parent == (tmp_path / "reports").resolve()
    assert re.fullmatch(r"\d{8}-\d{6}_moe-与-新闻\.md", path.name)
    md = path.read_text(encoding="utf-8")
    assert "**User:** How many experts does MoE-LoRA use?" in md and "**User:** 小苔藓什么时候保送到厦门大学？" in md
    assert "## Plan" in md and "Four experts [1]" in md
    assert "Citations: [1] moe.md" in md and "(cited)" in md and "news.txt" in md
    a.reset()
    assert a.history == []


def test_bad_input_gives_one_line(tmp_path):
    a = Assistant(AssistantConfig(backend="scripted", reports_dir=tmp_path))
    assert a.ask("   ").error == "question: empty; type a question"
    t = a.ask("what is this?", images=[tmp_path / "missing.jpg"])
    assert t.error == f"{tmp_path / 'missing.jpg'}: image file not found" and a.history == []
    with pytest.raises(ConfigError, match="^k: must be in 1..50"):
        AssistantConfig(k=0)
    with pytest.raises(ConfigError, match="backend"):
        AssistantConfig(backend="gpt")


def test_notices():
    assert "embedded tiny Qwen3-VL" in Assistant(AssistantConfig()).notice
    assert "Scripted" in Assistant(AssistantConfig(backend="scripted")).notice
    assert Assistant(AssistantConfig(backend="openai")).notice is None


def test_cancel_from_another_thread(kb_dir, kb, tmp_path):
    model = ScriptedChatModel(rules={"Responder": "word " * 200}, token_delay=0.01)
    a = Assistant(AssistantConfig(backend="scripted", kb_dir=kb_dir, reports_dir=tmp_path, use_rerank=False),
                  chat_model=model, kb=kb)
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)        # the GUI's Stop button, pressed mid-answer

    def on_token(_):
        if not timer.is_alive() and not cancel.is_set():
            timer.start()

    trace = a.ask("How many experts does MoE-LoRA use?", cancel=cancel, on_token=on_token)
    timer.join()
    assert trace.cancelled and 0 < len(trace.answer.split()) < 200
    assert "reviewer" not in [s.name for s in trace.steps]


def test_command_line_one_question(tmp_path, capsys):
    from multi_agent.assistant import main
    rc = main(["--backend", "scripted", "--reports_dir", str(tmp_path), "--kb_dir", str(tmp_path / "kb"),
               "-q", "Hello there?", "--no-kb", "--summary"])
    out = capsys.readouterr()
    assert rc == 0 and "answer: This is the answer." in out.out and "[planner" in out.err
    (report,) = tmp_path.glob("*_hello-there.md")
    assert f"summary: {report}" in out.out


def test_command_line_collapses_runs_of_blank_lines(tmp_path, capsys, monkeypatch):
    """#22.8: with the tiny model `python -m multi_agent.assistant -q "hi"` printed ~500 blank lines."""
    import multi_agent.llm.registry as registry
    from multi_agent.assistant import main

    rules = {"Responder": "\n" * 500 + "Hi there.\n\n\n\n\nSecond line." + "\n" * 300}
    monkeypatch.setitem(registry.CHAT_MODELS, "scripted", lambda **kw: ScriptedChatModel(rules=rules))
    assert main(["--backend", "scripted", "--kb_dir", str(tmp_path / "kb"), "-q", "hi", "--no-kb"]) == 0
    out = capsys.readouterr().out
    assert "answer: Hi there.\n\nSecond line." in out and "\n\n\n" not in out and len(out.splitlines()) < 6


@pytest.mark.slow
def test_command_line_on_the_tiny_model_is_quiet(tiny_model_dir, tmp_path):
    """#22.8: no third-party progress bars or request lines on a default (non-verbose) run."""
    import os
    import subprocess
    import sys

    from vlft.paths import REPO_DIR

    proc = subprocess.run([sys.executable, "-m", "multi_agent.assistant", "-q", "hi", "--model_dir",
                           str(tiny_model_dir), "--kb_dir", str(tmp_path / "kb"), "--max_new_tokens", "48",
                           "--no-kb"], cwd=str(REPO_DIR), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO_DIR)})
    assert proc.returncode == 0, proc.stderr
    assert "\n\n\n" not in proc.stdout and len(proc.stdout.splitlines()) < 20
    for noise in ("Loading weights", "HTTP Request", "gemm_4bit"):
        assert noise not in proc.stderr, proc.stderr
