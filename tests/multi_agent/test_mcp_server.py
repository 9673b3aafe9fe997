"""The MCP server driven by the official SDK client over stdio (a real subprocess):
list and call every tool, input validation, and path-traversal refusal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from multi_agent.mcp_server import PathRefused, confine
from vlft.paths import REPO_DIR

TOOLS = {"ask", "search_knowledge_base", "index_documents", "save_session_summary"}


def run_session(args: list[str], body, timeout: float = 240):
    """Start ``python -m multi_agent.mcp_server *args`` and run ``await body(session)``."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "HF_", "TRANSFORMERS_",
                                                                 "TOKENIZERS_", "PATH", "HOME"))}
    params = StdioServerParameters(command=sys.executable, args=["-m", "multi_agent.mcp_server", *args],
                                   env=env, cwd=str(REPO_DIR))

    async def main():
        with anyio.fail_after(timeout):
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await body(session)

    return anyio.run(main)


def payload(result):
    assert not result.is_error, result.content[0].text
    return result.structured_content if result.structured_content is not None \
        else json.loads(result.content[0].text)


def error_text(result) -> str:
    assert result.is_error
    return result.content[0].text


def test_confine_resolves_before_judging(tmp_path):
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    assert confine("sub/a.md", [root]) == (root / "sub" / "a.md").resolve()
    assert confine(str(root / "a.md"), [root]) == (root / "a.md").resolve()
    for bad in ("../../etc/passwd", "/etc/passwd", "sub/../../x", "", "a\x00b"):
        with pytest.raises(PathRefused):
            confine(bad, [root])
    (root / "link").symlink_to("/etc")
    with pytest.raises(PathRefused, match="outside"):
        confine("link/passwd", [root])


def test_stdio_server_lists_and_calls_every_tool(tmp_path, coco_sample_dir):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "moe.md").write_text("The MoE-LoRA adapter mixes four LoRA experts with a learned router.\n",
                               encoding="utf-8")
    (kb / "news.txt").write_text("小苔藓于今年9月25日保送到厦门大学。\n", encoding="utf-8")
    image = sorted((coco_sample_dir / "images").glob("*.jpg"))[0]
    (kb / "photo.jpg").write_bytes(image.read_bytes())
    reports = tmp_path / "reports"

    async def body(s):
        out = {}
        tools = (await s.list_tools()).tools
        out["tools"] = {t.name: t for t in tools}
        out["empty_summary"] = await s.call_tool("save_session_summary", {})
        out["index"] = await s.call_tool("index_documents", {})
        (kb / "cats.txt").write_text("Cats sleep sixteen hours a day.\n", encoding="utf-8")
        out["index_one"] = await s.call_tool("index_documents", {"paths": ["cats.txt"]})
        out["search"] = await s.call_tool("search_knowledge_base", {"query": "how many experts", "k": 2})
        progress = out["progress"] = []

        async def on_progress(done, total, message):
            progress.append(message)

        out["ask"] = await s.call_tool("ask", {"question": "How many experts does MoE-LoRA use?"},
                                       progress_callback=on_progress)
        out["ask_image"] = await s.call_tool("ask", {"question": "What is in the photo?",
                                                     "image_path": "photo.jpg", "use_kb": False})
        out["summary"] = await s.call_tool("save_session_summary", {"title": "MCP session"})
        # refused inputs
        out["trav_index"] = await s.call_tool("index_documents", {"paths": ["../../etc/passwd"]})
        out["trav_abs"] = await s.call_tool("index_documents", {"paths": ["/etc/passwd"]})
        out["trav_image"] = await s.call_tool("ask", {"question": "q", "image_path": "../../../etc/passwd"})
        out["bad_k"] = await s.call_tool("search_knowledge_base", {"query": "x", "k": 0})
        out["empty_q"] = await s.call_tool("ask", {"question": ""})
        out["missing"] = await s.call_tool("index_documents", {"paths": ["nope.md"]})
        return out

    out = run_session(["--backend", "scripted", "--kb_dir", str(kb), "--reports_dir", str(reports),
                       "--no-use_rerank"], body)

    assert set(out["tools"]) == TOOLS
    ask_schema = out["tools"]["ask"].input_schema
    assert ask_schema["required"] == ["question"] and {"image_path", "use_kb"} <= set(ask_schema["properties"])
    assert "no turns yet" in error_text(out["empty_summary"])

    idx = payload(out["index"])
    assert idx["added"] == 2 and sorted(idx["files"]) == ["moe.md", "news.txt"]
    assert payload(out["index_one"])["files"] == ["cats.txt", "moe.md", "news.txt"]

    hits = payload(out["search"])["hits"]
    assert len(hits) == 2 and hits[0]["source"] == "moe.md" and hits[0]["n"] == 1

    ans = payload(out["ask"])
    assert ans["decision"]["retrieve"] and ans["evidence"][0]["source"] == "moe.md"
    assert ans["citations"] == [{"n": 1, "source": "moe.md", "page": None,
                                 "chunk_id": ans["evidence"][0]["chunk_id"]}]
    assert [s["name"] for s in ans["steps"]] == ["planner", "manager", "knowledge", "responder", "reviewer"]
    assert [m.split(":")[0] for m in out["progress"]] == ["planner", "manager", "knowledge", "responder",
                                                           "reviewer"]        # streamed as each agent finished
    img = payload(out["ask_image"])
    assert not img["decision"]["retrieve"] and img["evidence"] == []

    summ = payload(out["summary"])
    path = Path(summ["path"])
    assert path.parent == reports.resolve() and path.name.endswith("_mcp-session.md") and summ["turns"] == 2
    md = path.read_text(encoding="utf-8")
    assert "How many experts does MoE-LoRA use?" in md and "What is in the photo?" in md and "moe.md" in md

    for key in ("trav_index", "trav_abs", "trav_image"):
        assert "outside the allowed folder" in error_text(out[key]) and "refused" in error_text(out[key])
    assert "k" in error_text(out["bad_k"])
    assert "question" in error_text(out["empty_q"])
    assert "nope.md" in error_text(out["missing"])
    assert sorted(p.name for p in kb.iterdir() if not p.name.startswith(".")) == \
        ["cats.txt", "moe.md", "news.txt", "photo.jpg"]                 # nothing copied in from outside


@pytest.mark.slow
def test_stdio_server_on_the_tiny_local_model(tiny_model_dir, tmp_path):
    async def body(s):
        return await s.call_tool("ask", {"question": "Say hello.", "use_kb": False})

    out = run_session(["--model_dir", str(tiny_model_dir), "--kb_dir", str(tmp_path / "kb"),
                       "--reports_dir", str(tmp_path / "reports"), "--max_new_tokens", "8"], body)
    ans = payload(out)
    assert [s["name"] for s in ans["steps"]][:4] == ["planner", "manager", "responder", "reviewer"]
    assert ans["review"]["rewrites"] <= 1 and isinstance(ans["answer"], str)


@pytest.mark.slow
def test_index_documents_touches_only_the_given_files(tmp_path):
    """#22.5: index_documents(paths=[one file]) synced the whole folder and deleted another file's
    entry; #19.7: a symlink inside the folder that leads out of it is refused, never read."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("Alpacas hum when they are content.\n", encoding="utf-8")
    (kb / "b.md").write_text("Beavers build dams with mud and branches.\n", encoding="utf-8")
    secret = tmp_path / "secret.md"
    secret.write_text("TOPSECRET password\n", encoding="utf-8")
    (kb / "link.md").symlink_to(secret)

    async def body(s):
        out = {"all": await s.call_tool("index_documents", {})}
        (kb / "b.md").unlink()
        (kb / "c.md").write_text("Capybaras are the largest rodents.\n", encoding="utf-8")
        out["one"] = await s.call_tool("index_documents", {"paths": ["c.md"]})
        out["link"] = await s.call_tool("index_documents", {"paths": ["link.md"]})
        out["search"] = await s.call_tool("search_knowledge_base", {"query": "TOPSECRET password", "k": 10})
        return out

    out = run_session(["--backend", "scripted", "--kb_dir", str(kb), "--reports_dir", str(tmp_path / "r"),
                       "--no-use_rerank"], body)
    first = payload(out["all"])
    assert first["files"] == ["a.md", "b.md"] and "outside" in first["skipped"][0]["reason"]
    one = payload(out["one"])
    assert one["files"] == ["a.md", "b.md", "c.md"] and (one["added"], one["deleted"]) == (1, 0)
    assert "outside the allowed folder" in error_text(out["link"])
    assert not any("TOPSECRET" in h["text"] for h in payload(out["search"])["hits"])
