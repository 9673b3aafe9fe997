"""The MCP server over streamable HTTP (#22.4): one dialogue per client, a bearer token beyond
loopback, Host/Origin checks on loopback. Real server subprocesses, the official MCP client."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from vlft.paths import REPO_DIR


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def http_server(tmp_path: Path, *extra: str, env: dict | None = None):
    port = _free_port()
    kb = tmp_path / "kb"
    kb.mkdir(exist_ok=True)
    (kb / "moe.md").write_text("The MoE-LoRA adapter mixes four LoRA experts with a learned router.\n",
                               encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "multi_agent.mcp_server", "--transport", "http", "--port",
                             str(port), "--backend", "scripted", "--kb_dir", str(kb), "--no-use_rerank",
                             "--reports_dir", str(tmp_path / "reports"), *extra], cwd=str(REPO_DIR),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < deadline, "server did not start"
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(30)


def _payload(result):
    assert not result.is_error, result.content[0].text
    return result.structured_content if result.structured_content is not None \
        else json.loads(result.content[0].text)


async def _client(url: str, body, headers: dict | None = None):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                return await body(s)


def test_streamable_http_transport_lists_and_calls_the_tools(tmp_path):
    async def body(s):
        names = {t.name for t in (await s.list_tools()).tools}
        return names, await s.call_tool("ask", {"question": "Hello?", "use_kb": False})

    with http_server(tmp_path) as url:
        names, result = anyio.run(_client, url, body)
    assert names == {"ask", "search_knowledge_base", "index_documents", "save_session_summary"}
    assert _payload(result)["answer"] == "This is the answer."


def test_two_http_clients_keep_their_own_dialogue(tmp_path):
    """Client B's summary contained client A's question: every client now has its own session."""
    with http_server(tmp_path) as url:
        results: dict = {}

        async def client(name: str, question: str, pause: float):
            async def body(s):
                await s.call_tool("ask", {"question": question, "use_kb": False})
                await anyio.sleep(pause)             # the other client asks in between
                return await s.call_tool("save_session_summary", {"title": f"client {name}"})

            results[name] = await _client(url, body)

        async def both():
            with anyio.fail_after(180):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client, "a", "What colour is the alpaca named Zebulon?", 1.0)
                    tg.start_soon(client, "b", "How tall is the giraffe named Quentin?", 1.0)

        anyio.run(both)
    a, b = (_payload(results[k]) for k in ("a", "b"))
    assert a["turns"] == b["turns"] == 1
    text_a, text_b = Path(a["path"]).read_text(encoding="utf-8"), Path(b["path"]).read_text(encoding="utf-8")
    assert "Zebulon" in text_a and "Quentin" not in text_a
    assert "Quentin" in text_b and "Zebulon" not in text_b


def test_non_loopback_bind_needs_a_token(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "multi_agent.mcp_server", "--transport", "http", "--host",
                           "0.0.0.0", "--backend", "scripted", "--kb_dir", str(tmp_path)], cwd=str(REPO_DIR),
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "MCP_AUTH_TOKEN"})
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "0.0.0.0" in err[0] and "MCP_AUTH_TOKEN" in err[0]


def test_token_is_required_when_set_and_host_is_checked_on_loopback(tmp_path):
    import httpx

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n", encoding="utf-8")
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    hdrs = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with http_server(tmp_path, "--auth-token-file", str(token_file)) as url:
        assert httpx.post(url, json=init, headers=hdrs).status_code == 401
        assert httpx.post(url, json=init, headers={**hdrs, "Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.post(url, json=init, headers={**hdrs, "Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own Host / Origin
        auth = {**hdrs, "Authorization": "Bearer s3cret-token"}
        assert httpx.post(url, json=init, headers={**auth, "Host": "evil.example:80"}).status_code == 421
        assert httpx.post(url, json=init, headers={**auth, "Origin": "http://evil.example"}).status_code == 403

        async def body(s):
            return {t.name for t in (await s.list_tools()).tools}

        names = anyio.run(_client, url, body, {"Authorization": "Bearer s3cret-token"})
        assert "ask" in names


@pytest.mark.parametrize("host", ["127.0.0.1"])
def test_http_app_without_token_still_checks_host(host):
    """The app object itself (no subprocess): loopback gets DNS-rebinding protection by default."""
    from multi_agent.mcp_server import transport_security

    sec = transport_security(host)
    assert sec.enable_dns_rebinding_protection and "127.0.0.1:*" in sec.allowed_hosts
    assert not transport_security("0.0.0.0").enable_dns_rebinding_protection
