"""The assistant facade: one object the Qt app and the MCP server share.

    from multi_agent.assistant import Assistant, AssistantConfig
    a = Assistant(AssistantConfig(model_dir="qwen3-vl-4b-instruct", adapter="output/lora"))
    trace = a.ask("What does the report say about X?", images=["photo.jpg"], on_token=print)
    trace.answer, trace.citations, trace.steps
    a.save_summary()

The model and the knowledge base load lazily (first ``ask``/``kb`` access, or ``warm_up()``), so
constructing an Assistant is instant and a GUI can do the loading in a worker thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from multi_agent.agents.graph import Chain, ChainSettings
from multi_agent.agents.trace import StepTrace, TurnTrace
from multi_agent.tools import make_summary_tool, save_session_summary
from vlft.config import BaseConfig, field, require
from vlft.models.loading import DEFAULT_MAX_PIXELS
from vlft.paths import REPO_DIR

log = logging.getLogger(__name__)
DEFAULT_KB_DIR = REPO_DIR / "multi_agent" / "knowledge_base"
DEFAULT_REPORTS_DIR = REPO_DIR / "multi_agent" / "output" / "reports"


@dataclass
class AssistantConfig(BaseConfig):
    """Desktop assistant / MCP server: model backend, knowledge base, generation settings."""

    model_dir: Path | None = field(None, "Qwen-VL model folder (base or merged); none: the embedded "
                                   "tiny random-weight model", aliases=("model",))
    adapter: Path | None = field(None, "adapter folder from training (LoRA/DoRA/IA3/MoE-LoRA)")
    backend: Literal["local", "openai", "scripted"] = field(
        "local", "local: Qwen-VL in this process; openai: an OpenAI-compatible server (vLLM, Ollama, "
        "LM Studio); scripted: canned answers (tests)")
    quant: Literal["auto", "4bit", "8bit", "none"] = field(
        "auto", "local backend: auto = 4-bit NF4 on CUDA, fp32 on CPU")
    openai_url: str = field("http://localhost:8000/v1", "OpenAI-compatible base URL (vLLM :8000, "
                            "Ollama :11434/v1, LM Studio :1234/v1)")
    openai_model: str = field("", "model name on that server (empty: the first one it lists)")
    openai_api_key: str | None = field(None, "API key for that server (default: $OPENAI_API_KEY; the app keeps "
                                       "it in the OS keyring)")
    kb_dir: Path = field(DEFAULT_KB_DIR, "knowledge-base folder (.txt/.md/.pdf ...)", aliases=("kb",))
    embedder: str | None = field(None, "embedder for indexing and search; unset: the one the index was built "
                                 "with (a different one rebuilds the index)")
    reranker: str | None = field(None, "cross-encoder name or local path; unset: BAAI/bge-reranker-base when it "
                                 "is on disk; 'none': no reranking")
    ocr: bool = field(False, "knowledge base: read images and scanned PDF pages with OCR")
    reports_dir: Path = field(DEFAULT_REPORTS_DIR, "where session summaries are written")
    max_new_tokens: int = field(512, "longest answer in tokens")
    temperature: float = field(0.0, "0 = greedy (deterministic)")
    k: int = field(5, "passages retrieved per question")
    use_rerank: bool = field(True, "rerank fused BM25+vector hits with the cross-encoder")
    history_turns: int = field(6, "earlier turns the Responder sees")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, "image resolution bound (same as training)")

    def validate(self) -> None:
        super().validate()
        for name in ("model_dir", "adapter"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, Path(getattr(self, name)))
        self.kb_dir, self.reports_dir = Path(self.kb_dir), Path(self.reports_dir)
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        require(0.0 <= self.temperature <= 2.0, "temperature", f"must be in [0, 2], got {self.temperature}")
        require(1 <= self.k <= 50, "k", f"must be in 1..50, got {self.k}")
        require(self.history_turns >= 0, "history_turns", "must be >= 0")
        require(self.backend != "openai" or self.openai_url.startswith(("http://", "https://")),
                "openai_url", f"must start with http:// or https://, got {self.openai_url!r}")


def knowledge_base(config: AssistantConfig):
    """The knowledge base an Assistant with ``config`` uses (the app opens it before any model loads:
    indexing needs no chat model). Its embedder and chunking come from the index on disk."""
    from multi_agent.rag import KnowledgeBase, RagConfig

    extra = {k: v for k, v in (("embedder", config.embedder), ("reranker", config.reranker)) if v}
    return KnowledgeBase(RagConfig(kb_dir=config.kb_dir, ocr=config.ocr, **extra))


class Assistant:
    """A chat session over the agent chain. Thread-safe: one turn at a time."""

    def __init__(self, config: AssistantConfig | None = None, chat_model: Any = None, kb: Any = None,
                 store: Any = None):
        self.config = config or AssistantConfig()
        self.store = store                        # a ConversationStore: each finished turn is saved there
        self.conversation_id: int | None = None   # the stored conversation this dialogue continues
        self._chat_model = chat_model
        self._kb = kb
        self._chain: Chain | None = None
        self._turn_lock = threading.Lock()
        self._init_lock = threading.Lock()
        self._owner: Assistant | None = None      # set on sessions: the model and KB come from there
        self.history: list[TurnTrace] = []

    @classmethod
    def load(cls, config: AssistantConfig, kb: Any = None, store: Any = None) -> "Assistant":
        """Build an Assistant and load its model now (call from a worker thread). Other local models
        are released first: one 4-bit 4B model fits an 8 GB GPU, two don't."""
        from multi_agent.llm.local import generator_key, release_generators

        release_generators(keep=generator_key(config.model_dir, config.adapter) if config.backend == "local"
                           else None)
        assistant = cls(config, kb=kb, store=store)
        assistant.warm_up()
        assistant.kb          # noqa: B018 (opens the knowledge base off the GUI thread too)
        return assistant

    def new_session(self) -> "Assistant":
        """Another dialogue over the same loaded model and knowledge base (one per MCP client)."""
        session = Assistant(self.config)
        session._owner = self._owner or self
        return session

    # -- parts (lazy) ------------------------------------------------------------------------
    @property
    def notice(self) -> str | None:
        """One line for the status bar about the model in use (tiny/scripted), else None."""
        if self._owner is not None:
            return self._owner.notice
        if self._chat_model is not None:
            return getattr(self._chat_model, "notice", None)
        if self.config.backend == "scripted":
            from multi_agent.llm.scripted import SCRIPTED_NOTICE
            return SCRIPTED_NOTICE
        if self.config.backend == "local":
            from multi_agent.llm.local import model_notice
            return model_notice(self.config.model_dir)
        return None

    @property
    def chat_model(self):
        if self._owner is not None:
            return self._owner.chat_model
        with self._init_lock:
            if self._chat_model is None:
                from multi_agent.llm.registry import make_chat_model
                c = self.config
                if c.backend == "local":
                    self._chat_model = make_chat_model(
                        "local", model_dir=str(c.model_dir) if c.model_dir else None,
                        adapter=str(c.adapter) if c.adapter else None, quant=c.quant,
                        max_pixels=c.max_pixels, max_new_tokens=c.max_new_tokens, temperature=c.temperature)
                elif c.backend == "openai":
                    self._chat_model = make_chat_model(
                        "openai", base_url=c.openai_url, model=c.openai_model, api_key=c.openai_api_key,
                        max_new_tokens=c.max_new_tokens, temperature=c.temperature)
                else:
                    self._chat_model = make_chat_model("scripted")
            return self._chat_model

    @property
    def kb(self):
        """The knowledge base (``multi_agent.rag.KnowledgeBase``), created on first use."""
        if self._owner is not None:
            return self._owner.kb
        with self._init_lock:
            if self._kb is None:
                self._kb = knowledge_base(self.config)
            return self._kb

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            c = self.config
            settings = ChainSettings(max_new_tokens=c.max_new_tokens, temperature=c.temperature, k=c.k,
                                     use_rerank=c.use_rerank, history_turns=c.history_turns)
            self._chain = Chain(self.chat_model, lambda: self.kb, tools=[self.summary_tool()],
                                settings=settings)
        return self._chain

    def warm_up(self) -> None:
        """Load the model now, or check the server answers (call from a worker thread; ``ask``
        does it otherwise). Raises with one line when the model folder or server is unusable."""
        model = self.chat_model
        for probe in ("generator", "model_name"):      # local: load weights; openai: list models
            fn = getattr(model, probe, None)
            if callable(fn):
                fn()
                break

    def summary_tool(self):
        """``save_session_summary`` as a LangChain tool over this session's history."""
        return make_summary_tool(lambda: list(self.history), self.config.reports_dir, meta=self._meta())

    # -- turns --------------------------------------------------------------------------------
    def ask(self, question: str, images: Sequence[str | Path | Any] = (), use_kb: bool = True,
            on_token: Callable[[str], None] | None = None,
            on_step: Callable[[StepTrace], None] | None = None,
            cancel: threading.Event | None = None, replace_from: int | None = None) -> TurnTrace:
        """Run one turn. Never raises for model/retrieval trouble: see ``trace.error``.

        ``replace_from``: forget the turns from this index on first (edit and resend, regenerate)."""
        question = (question or "").strip()
        if not question:
            return TurnTrace(question="", error="question: empty; type a question")
        missing = [str(p) for p in images if isinstance(p, (str, Path)) and not Path(p).is_file()]
        if missing:
            return TurnTrace(question=question, images=[str(p) for p in images],
                             error=f"{missing[0]}: image file not found")
        images = [str(Path(p).resolve()) if isinstance(p, (str, Path)) else p for p in images]
        with self._turn_lock:
            try:
                chain = self.chain
            except Exception as e:  # model folder missing, server unreachable, ...
                return TurnTrace(question=question, images=[str(p) for p in images if isinstance(p, str)],
                                 error=f"{type(e).__name__}: {e}")
            if replace_from is not None:
                del self.history[replace_from:]
                if self.store is not None and self.conversation_id is not None:
                    self.store.truncate(self.conversation_id, replace_from)
            history = [(t.question, t.answer) for t in self.history
                       if t.answer and not t.error and not t.cancelled]
            return chain.run(question, images, use_kb=use_kb, history=history, on_token=on_token,
                             on_step=on_step, cancel=cancel, commit=self._commit)

    def _commit(self, trace: TurnTrace) -> None:
        self.history.append(trace)
        if self.store is None:
            return
        try:
            if self.conversation_id is None:
                self.conversation_id = self.store.create(trace.question, kb=self.config.kb_dir)
            self.store.append(self.conversation_id, trace)
        except Exception as e:  # noqa: BLE001 (a full disk must not lose the answer itself)
            log.warning("conversation not saved (%s: %s)", type(e).__name__, e)

    def use_kb(self, kb: Any) -> None:
        """Answer from another knowledge base (a named collection) from the next turn on."""
        with self._turn_lock:
            self._kb = kb
            self.config = self.config.replace(kb_dir=Path(kb.kb_dir))

    def regenerate(self, **kwargs: Any) -> TurnTrace:
        """Ask the last question again (same images), replacing its answer."""
        if not self.history:
            return TurnTrace(question="", error="regenerate: no question yet")
        last = self.history[-1]
        images = [p for p in last.images if Path(p).is_file()]
        return self.ask(last.question, images=images, replace_from=len(self.history) - 1, **kwargs)

    def open_conversation(self, conversation_id: int) -> list[TurnTrace]:
        """Continue a stored conversation: its turns become this dialogue's history."""
        if self.store is None:
            raise ValueError("open_conversation: this assistant keeps no conversations")
        with self._turn_lock:
            self.history = self.store.turns(conversation_id)
            self.conversation_id = conversation_id
            return list(self.history)

    def reset(self) -> None:
        """Forget the dialogue and start a new conversation (the model and the knowledge base stay
        loaded; a stored conversation stays in the store)."""
        with self._turn_lock:
            self.history = []
            self.conversation_id = None

    def save_summary(self, title: str | None = None) -> Path:
        """Write the session as Markdown under ``reports_dir``; returns the file."""
        return save_session_summary(list(self.history), self.config.reports_dir, title=title,
                                    meta=self._meta())

    def _meta(self) -> dict[str, str]:
        c = self.config
        if c.backend == "openai":
            model = f"{c.openai_model or '(server default)'} @ {c.openai_url}"
        elif c.backend == "scripted":
            model = "scripted"
        else:
            model = str(c.model_dir or "embedded tiny Qwen3-VL") + (f" + {c.adapter}" if c.adapter else "")
        return {"model": model}


# -- command line: one question from a terminal (demos, scripting) ------------------------------
def quiet_progress_bars() -> None:
    """No per-load "Loading weights" bars from transformers on the terminal (logs are quiet by
    default; --verbose keeps them). Shared by every multi_agent command line."""
    from multi_agent.rag.embed import quiet_transformers

    quiet_transformers()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m multi_agent.assistant --question "..." [--image a.jpg] [--summary]``"""
    import argparse
    import sys

    from vlft.config import build_parser, config_from_args
    from vlft.utils.logging import setup_logging

    parser = argparse.ArgumentParser(prog="python -m multi_agent.assistant",
                                     description="Ask the multi-agent assistant one question.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--question", "-q", required=True, help="the question (any language)")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    parser.add_argument("--no-kb", action="store_true", help="answer without the knowledge base")
    parser.add_argument("--summary", action="store_true", help="save the session report afterwards")
    parser.add_argument("--verbose", action="store_true")
    build_parser(AssistantConfig, parser=parser)
    ns = vars(parser.parse_args(argv))
    opts = {k: ns.pop(k) for k in ("question", "image", "no_kb", "summary", "verbose")}
    config = config_from_args(AssistantConfig, ns, parser)
    setup_logging(opts["verbose"])
    if not opts["verbose"]:
        quiet_progress_bars()
    a = Assistant(config)
    if a.notice:
        print(f"note: {a.notice}", file=sys.stderr)

    state = {"label": "answer: ", "midline": False}

    def on_step(s: StepTrace) -> None:
        if state["midline"]:                  # end the streamed answer line before the step line
            print(flush=True)
            state["midline"] = False
        if s.name != "responder":
            print(f"[{s.name} {s.seconds:.1f}s] " + s.output.replace("\n", "\n    "), file=sys.stderr,
                  flush=True)
        if s.name == "reviewer" and s.data.get("rewrite_next"):
            state["label"] = "rewritten answer: "

    def on_token(t: str) -> None:
        if state["label"]:                    # first token of an answer (or of its rewrite)
            print(state["label"], end="", flush=True)
            state["label"] = ""
        print(t, end="", flush=True)
        state["midline"] = True

    try:                                      # load first, so step timings are the agents' own
        a.warm_up()
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    trace = a.ask(opts["question"], images=opts["image"], use_kb=not opts["no_kb"],
                  on_token=on_token, on_step=on_step)
    if state["midline"]:
        print()
    if not trace.answer.strip() and not trace.error and not trace.cancelled:
        print("answer: (the model returned no text)")
    if trace.error:
        print(f"error: {trace.error}", file=sys.stderr)
        return 1
    for c in trace.citations:
        print(f"[{c['n']}] {c['source']}" + (f", p. {c['page']}" if c.get("page") else ""))
    if opts["summary"]:
        print(f"summary: {a.save_summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
