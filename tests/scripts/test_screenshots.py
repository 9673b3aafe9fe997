"""scripts/screenshots.py makes the README pictures from the real window, offscreen, and leaves the
checkout as it was; with no Chinese font it says so in one line and makes no Chinese picture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PyQt5")

from vlft.paths import REPO_DIR  # noqa: E402

SCRIPT = REPO_DIR / "scripts" / "screenshots.py"
KB_DIR = REPO_DIR / "multi_agent" / "knowledge_base"


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # cwd: the repo root, as the docs say (and so this checkout's code is the one imported).
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})})


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_english_screenshot_of_the_answer_over_the_sample_knowledge_base(tmp_path):
    before = tree_state(KB_DIR)
    out = tmp_path / "shots" / "app.png"
    proc = run_script("--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{out}: 1280x800")
    assert "Scripted backend" in summary                     # the backend the caption names
    assert "'Folder: multi_agent/knowledge_base'" in summary  # not a temp path
    evidence = int(summary.split(" evidence rows")[0].rsplit(" ", 1)[1])
    citations = int(summary.split(" citations")[0].rsplit(" ", 1)[1])
    assert evidence >= 3 and citations >= 1
    assert tree_state(KB_DIR) == before                      # the index went to a temp folder
    assert not list(out.parent.glob(".*.tmp"))


def test_no_chinese_font_one_line_and_no_picture(tmp_path):
    """Qt sees only the fonts of this fontconfig file: none, so no Chinese one."""
    (tmp_path / "fonts").mkdir()
    conf = tmp_path / "fonts.conf"
    conf.write_text(f'<?xml version="1.0"?>\n<fontconfig><dir>{tmp_path / "fonts"}</dir>'
                    f'<cachedir>{tmp_path / "cache"}</cachedir></fontconfig>\n', encoding="utf-8")
    out = tmp_path / "app_zh.png"
    proc = run_script("--lang", "zh", "--out", str(out), env={"FONTCONFIG_FILE": str(conf)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [line for line in proc.stderr.splitlines() if "Chinese font" in line]
    assert said == [f"no Chinese font installed (e.g. apt install fonts-noto-cjk): {out} not made"]
    assert not out.exists()


def test_scripted_answer_quotes_the_sentence_the_question_asks_about(monkeypatch):
    """The demo backend's Responder: the best-matching sentence of the passages, with its citation."""
    import importlib.util

    from langchain_core.messages import HumanMessage, SystemMessage

    spec = importlib.util.spec_from_file_location("screenshots", SCRIPT)
    shots = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "screenshots", shots)  # dataclasses look their module up
    spec.loader.exec_module(shots)
    prompt = ("Plan:\n1. look\n\nEvidence:\n[1] (a.md)\n# Title Intro text here. The sky is blue today.\n\n"
              "[2] (b.txt)\nRouters send each token to two experts. Cats sleep a lot.\n\n"
              "Question: How many experts does the router send each token to?")
    answer = shots.quote_passages([SystemMessage("You are the Responder."), HumanMessage(prompt)])
    assert answer == "From the knowledge base:\n\n- Routers send each token to two experts. [2]"
    zh = shots.quote_passages([SystemMessage("你是多模态助手的 Responder"), HumanMessage(
        "参考资料:\n[1] (c.md)\n训练时加入负载均衡损失。猫喜欢睡觉。\n\n问题: 为什么要负载均衡？")])
    assert zh == "知识库中的相关内容：\n\n- 训练时加入负载均衡损失。 [1]"
    nothing = shots.quote_passages([SystemMessage("You are the Responder."),
                                    HumanMessage("Evidence:\n(no evidence retrieved)\n\nQuestion: hi?")])
    assert nothing == "The knowledge base has nothing on this."
