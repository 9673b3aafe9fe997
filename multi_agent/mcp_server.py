"""MCP server: the assistant's chain, knowledge base and session summary as MCP tools.

    python -m multi_agent.mcp_server                         # stdio (for Claude Desktop, VS Code, ...)
    python -m multi_agent.mcp_server --transport http --port 8765   # streamable HTTP at /mcp
    python -m multi_agent.mcp_server --model_dir ./qwen3-vl-4b-instruct --adapter output/lora

Tools: ``ask``, ``search_knowledge_base``, ``index_documents``, ``save_session_summary``.
Every file path a client sends is resolved inside the knowledge-base folder (or a folder given
with ``--allow-dir``); anything else, ``../../etc/passwd`` included, is refused with one line.
Built on the official MCP Python SDK 2.x (``mcp.server.mcpserver.MCPServer``).
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Sequence

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from multi_agent.assistant import Assistant, AssistantConfig
from multi_agent.agents.trace import hit_to_dict
from vlft.config import ConfigError, build_parser

SERVER_NAME = "qwen-vl-assistant"
MAX_QUESTION_CHARS = 8000
MAX_QUERY_CHARS = 2000
MAX_PATHS = 200
MAX_SESSIONS = 64
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "MCP_AUTH_TOKEN"
INSTRUCTIONS = (
    "A local Qwen-VL assistant over the user's own documents. `ask` runs the Planner -> Manager -> "
    "Knowledge -> Responder -> Reviewer chain and answers with numbered citations [n] into its "
    "evidence list; `search_knowledge_base` returns raw passages; `index_documents` (re)indexes files "
    "inside the knowledge-base folder; `save_session_summary` writes the conversation to a Markdown "
    "report. File paths are relative to the knowledge-base folder.")

log = logging.getLogger(__name__)


class PathRefused(ValueError):
    """A client-supplied path points outside the folders the server may read."""


def confine(path: str, roots: Sequence[Path], what: str = "path") -> Path:
    """``path`` (relative to the first root, or absolute) resolved, if it lies inside one of ``roots``.

    Resolving first means ``..`` segments and symlinks are judged by where they really lead.
    """
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise PathRefused(f"{what}: empty or invalid path")
    p = Path(path).expanduser()
    resolved = (p if p.is_absolute() else roots[0] / p).resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise PathRefused(f"{what}: {path!r} is outside the allowed folder(s) ({allowed}); refused")


def trace_summary(trace: Any) -> dict[str, Any]:
    """What an MCP client needs from a TurnTrace (full evidence text included for grounding)."""
    return {
        "answer": trace.answer,
        "citations": trace.citations,
        "evidence": [hit_to_dict(h, i + 1) for i, h in enumerate(trace.evidence)],
        "plan": {"steps": trace.plan.steps, "needs_kb": trace.plan.needs_kb},
        "decision": {"retrieve": trace.decision.retrieve, "query": trace.decision.query,
                     "reason": trace.decision.reason},
        "review": {"verdict": trace.review.verdict, "feedback": trace.review.feedback,
                   "rewrites": trace.review.rewrites},
        "steps": [{"name": s.name, "seconds": s.seconds, "output": s.output} for s in trace.steps],
        "tool_calls": trace.tool_calls,
        "seconds": trace.seconds,
    }


def _progress_reporter(ctx: Any):
    """A thread-side ``report(done, total, message)`` that sends MCP progress notifications.

    Tools run in a worker thread (the SDK runs sync tools there); notifications are async, so
    they hop back to the event loop. Best effort: a client that asked for no progress, or a
    closed connection, must not fail the tool.
    """
    import anyio.from_thread

    def report(done: float, total: float | None, message: str) -> None:
        if ctx is None:
            return
        try:
            anyio.from_thread.run(ctx.report_progress, float(done), None if total is None else float(total),
                                  message)
        except Exception as e:  # noqa: BLE001
            log.debug("progress notification dropped: %s", e)

    return report


class Sessions:
    """One dialogue per MCP client connection (an HTTP client's MCP session, or the one stdio client):
    each gets its own Assistant session sharing the loaded model and knowledge base."""

    def __init__(self, assistant: Assistant, limit: int = MAX_SESSIONS):
        self.base, self.limit = assistant, limit
        self._by_id: OrderedDict[str, Assistant] = OrderedDict()
        self._lock = threading.Lock()

    def for_context(self, ctx: Any) -> Assistant:
        try:
            rc = ctx.request_context if ctx is not None else None
        except (AttributeError, ValueError):     # called outside a request (tests, direct use)
            rc = None
        headers = getattr(getattr(rc, "request", None), "headers", None)
        sid = headers.get("mcp-session-id") if headers is not None else None
        if not sid:                              # stdio: one client for the process
            return self.base
        with self._lock:
            if sid not in self._by_id:
                self._by_id[sid] = self.base.new_session()
                while len(self._by_id) > self.limit:     # forget the least recently used dialogue
                    self._by_id.popitem(last=False)
            self._by_id.move_to_end(sid)
            return self._by_id[sid]


def build_server(assistant: Assistant, allow_dirs: Sequence[Path] = ()):
    """An ``MCPServer`` whose tools call ``assistant``: one dialogue per client session."""

    kb_dir = Path(assistant.config.kb_dir)
    image_roots = [kb_dir, *map(Path, allow_dirs)]
    server = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)
    sessions = Sessions(assistant)

    def _confine(path: str, roots: Sequence[Path], what: str) -> Path:
        try:
            return confine(path, roots, what)
        except PathRefused as e:
            raise ToolError(str(e)) from None

    @server.tool(description="Ask the assistant a question (optionally about an image inside the "
                             "knowledge-base folder). Returns the answer, its citations [n] -> "
                             "evidence, the plan, the retrieval decision and the review.")
    def ask(question: Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                                           description="the question, any language")],
            image_path: Annotated[str | None, Field(description="image file, relative to the "
                                                    "knowledge-base folder")] = None,
            use_kb: Annotated[bool, Field(description="allow knowledge-base retrieval")] = True,
            ctx: Context | None = None) -> dict[str, Any]:
        if not question.strip():
            raise ToolError("question: empty")
        images = []
        if image_path:
            img = _confine(image_path, image_roots, "image_path")
            if not img.is_file():
                raise ToolError(f"image_path: {image_path!r} not found")
            images.append(img)
        report = _progress_reporter(ctx)
        done = [0]

        def on_step(step) -> None:          # one notification per agent as it finishes
            done[0] += 1
            report(done[0], None, f"{step.name}: {step.output.splitlines()[0] if step.output else ''}"[:200])

        trace = sessions.for_context(ctx).ask(question, images=images, use_kb=use_kb, on_step=on_step)
        if trace.error:
            raise ToolError(trace.error)
        return trace_summary(trace)

    @server.tool(description="Search the knowledge base (hybrid BM25 + vector; reranked by a cross-encoder "
                             "only when one is installed locally, none ships by default). Returns passages "
                             "with source file, page and scores.")
    def search_knowledge_base(
            query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)],
            k: Annotated[int, Field(ge=1, le=50, description="number of passages")] = 5,
            rerank: bool = True) -> dict[str, Any]:
        if not query.strip():
            raise ToolError("query: empty")
        hits = assistant.kb.search(query, k=k, rerank=rerank)
        return {"query": query, "hits": [hit_to_dict(h, i + 1) for i, h in enumerate(hits)]}

    @server.tool(description="Index documents inside the knowledge-base folder: no paths = sync the "
                             "whole folder (new, changed and deleted files); else only the given files "
                             "(relative to the knowledge-base folder).")
    def index_documents(paths: Annotated[list[str] | None, Field(max_length=MAX_PATHS)] = None,
                        ctx: Context | None = None) -> dict[str, Any]:
        kb = assistant.kb
        progress = _progress_reporter(ctx)
        def report_progress(p) -> None:
            progress(p.fraction, 1.0, p.text())

        if paths:
            rels = []
            for p in paths:
                _confine(p, [kb_dir], "paths")              # where it really leads must be inside
                named = Path(p).expanduser()
                named = named if named.is_absolute() else kb_dir / named
                if not named.is_file():
                    raise ToolError(f"paths: {p!r} not found")
                rels.append(Path(os.path.normpath(named.absolute())).relative_to(kb_dir.absolute()).as_posix())
            report = kb.index(report_progress, only=rels)
        else:
            report = kb.index(report_progress)
        out = {"summary": report.summary(), "files": [f["path"] for f in kb.files()]}
        for key in ("added", "changed", "deleted", "unchanged", "chunks"):
            out[key] = getattr(report, key)
        if report.skipped:
            out["skipped"] = [{"path": p, "reason": r} for p, r in report.skipped]
        if report.ignored:
            out["not_documents"] = len(report.ignored)
        return out

    @server.tool(description="Save this session (questions, answers, plan, dialogue, evidence with "
                             "citations) as a Markdown report in the reports folder; returns its path.")
    def save_session_summary(title: Annotated[str | None, Field(max_length=200)] = None,
                             ctx: Context | None = None) -> dict[str, Any]:
        session = sessions.for_context(ctx)
        try:
            path = session.save_summary(title)
        except ValueError as e:
            raise ToolError(str(e)) from None
        return {"path": str(path), "file": path.name, "turns": len(session.history)}

    return server


# -- HTTP: who may call ------------------------------------------------------------------------
def read_token(path: str | None) -> str | None:
    if path:
        return Path(path).expanduser().read_text(encoding="utf-8").strip() or None
    return os.environ.get(TOKEN_ENV, "").strip() or None


def transport_security(host: str):
    """On loopback, Host and Origin must name the loopback itself (what the MCP specification asks of
    local servers, against DNS rebinding); beyond loopback the bearer token is the check."""
    from mcp.server.transport_security import TransportSecuritySettings

    if host in LOOPBACK:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class BearerAuth:
    """ASGI wrapper: every HTTP request must carry ``Authorization: Bearer <token>`` (compared in
    constant time); others get 401 before reaching the MCP app."""

    def __init__(self, app: Any, token: str):
        self.app, self._expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, self._expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, host: str, token: str | None):
    """The streamable-HTTP ASGI app at /mcp, with the Host/Origin checks and the token (when set)."""
    app = server.streamable_http_app(host=host, transport_security=transport_security(host))
    return BearerAuth(app, token) if token else app


# -- command line -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> tuple[AssistantConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m multi_agent.mcp_server", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                        help="stdio for desktop MCP clients; http = streamable HTTP")
    parser.add_argument("--host", default="127.0.0.1", help="http: interface to bind; anything but loopback "
                        f"needs a bearer token (${TOKEN_ENV} or --auth-token-file)")
    parser.add_argument("--auth-token-file", default=None, metavar="FILE",
                        help=f"http: file holding the bearer token clients must send (else ${TOKEN_ENV}); "
                             "required when --host is not loopback")
    parser.add_argument("--port", type=int, default=8765, help="http: port")
    parser.add_argument("--allow-dir", action="append", default=[], dest="allow_dirs", metavar="DIR",
                        help="extra folder `ask` may read images from (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="debug logging on stderr")
    build_parser(AssistantConfig, parser=parser)
    ns = vars(parser.parse_args(argv))
    extras = argparse.Namespace(**{k: ns.pop(k) for k in ("transport", "host", "port", "allow_dirs",
                                                          "verbose", "auth_token_file")})
    try:
        extras.token = read_token(extras.auth_token_file)
    except OSError as e:
        parser.exit(2, f"error: --auth-token-file: {e.strerror or e}\n")
    if extras.transport == "http" and extras.host not in LOOPBACK and not extras.token:
        parser.exit(2, f"error: --host {extras.host} is reachable from other machines: set a bearer token "
                       f"(${TOKEN_ENV}=... or --auth-token-file FILE) that clients send as "
                       "'Authorization: Bearer <token>'\n")
    recipe = ns.pop("config", None)
    try:
        from vlft.config import load_yaml
        data = load_yaml(recipe) if recipe else {}
        data.update(ns)
        return AssistantConfig.from_dict(data, source=recipe or "command line"), extras
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")


def main(argv: Sequence[str] | None = None) -> None:
    from vlft.utils.logging import setup_logging

    config, opts = parse_args(argv)
    # stdout is the MCP wire in stdio mode: logs go to stderr (logging's default stream).
    setup_logging(opts.verbose)
    if not opts.verbose:
        from multi_agent.assistant import quiet_progress_bars
        quiet_progress_bars()
        logging.getLogger("mcp").setLevel(logging.WARNING)     # no per-request INFO lines
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
    assistant = Assistant(config)
    if assistant.notice:
        print(assistant.notice, file=sys.stderr)
    server = build_server(assistant, [Path(d) for d in opts.allow_dirs])
    if opts.transport == "stdio":
        server.run("stdio")
    else:
        import uvicorn

        uvicorn.run(http_app(server, opts.host, opts.token), host=opts.host, port=opts.port, log_level="warning")


if __name__ == "__main__":
    main()
