"""The local Qwen-VL (base folder + optional adapter) as a LangChain chat model.

Loading and generation are ``vlft.infer.VLGenerator``'s; this file adds what a chat app needs:
one loaded model per (model folder, adapter) for the whole process, one generation at a time
(a single GPU), token streaming through ``_stream``, cancellation through ``stop_event``, and
the embedded tiny model when no model is configured.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterator, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from multi_agent.llm.base import StreamingChatModel, to_normalized
from vlft.models.loading import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, free_memory
from vlft.paths import DEFAULT_TINY_DIR

Quant = Literal["auto", "4bit", "8bit", "none"]

TINY_NOTICE = ("No model configured: using the embedded tiny Qwen3-VL (random weights, answers are noise). "
               "Set a model folder (e.g. ./qwen3-vl-4b-instruct) for real answers.")

_GENERATORS: dict[tuple[str, str | None], Any] = {}
_LOAD_LOCK = threading.Lock()
# One GPU: two chats (GUI + MCP, or two tabs) generating at once would only thrash memory.
GENERATE_LOCK = threading.Lock()
JOIN_TIMEOUT_S = 60.0   # a stopped generation finishes its current decoding step first


def model_notice(model_dir: str | Path | None) -> str | None:
    """What the status bar should say about the configured model (None: nothing special)."""
    if model_dir is None:
        return TINY_NOTICE
    from vlft.models.tiny import is_tiny
    if is_tiny(model_dir):
        return (f"{model_dir} is the tiny random-weight test model: its answers check that the chain "
                "works, not what a real model would say.")
    return None


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """The configured folder, or the embedded tiny model (built on first use, ~5 s)."""
    if model_dir is not None:
        return Path(model_dir)
    from vlft.models.tiny import build_tiny_model, is_tiny
    with _LOAD_LOCK:
        if not (is_tiny(DEFAULT_TINY_DIR) and any(DEFAULT_TINY_DIR.glob("*.safetensors"))):
            build_tiny_model(DEFAULT_TINY_DIR)
    return DEFAULT_TINY_DIR


def generator_key(model_dir: str | Path | None, adapter: str | Path | None = None) -> tuple[str, str | None]:
    """The cache key of :func:`shared_generator`: resolved model folder and adapter folder."""
    path = Path(model_dir) if model_dir is not None else DEFAULT_TINY_DIR  # no build: a key only
    return (str(path.resolve()), str(Path(adapter).resolve()) if adapter else None)


def release_generators(keep: tuple[str, str | None] | None = None) -> int:
    """Drop every cached model but ``keep`` and free its memory; returns how many were dropped.

    Called before switching models (the app's model picker): an 8 GB GPU holds one 4-bit 4B model,
    not two. Chat models fetch their generator from the cache on each call, so nothing else keeps
    a dropped one alive.
    """
    with _LOAD_LOCK:
        gone = [k for k in _GENERATORS if k != keep]
        for k in gone:
            del _GENERATORS[k]
    if gone:
        free_memory()
    return len(gone)


def shared_generator(model_dir: str | Path | None, adapter: str | Path | None = None,
                     quant: Quant = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     min_pixels: int | None = DEFAULT_MIN_PIXELS):
    """The process-wide ``VLGenerator`` for (model_dir, adapter); loaded on first call."""
    path = resolve_model_dir(model_dir)
    key = generator_key(path, adapter)
    with _LOAD_LOCK:
        gen = _GENERATORS.get(key)
        if gen is None:
            from vlft.infer import VLGenerator
            gen = VLGenerator(path, adapter=adapter, precision=None if quant == "auto" else quant,
                              max_pixels=max_pixels, min_pixels=min_pixels)
            _GENERATORS[key] = gen
    return gen


class _Done:
    def __init__(self, text: str):
        self.text = text


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class LocalVLChatModel(StreamingChatModel):
    """Qwen-VL in this process. Images: content parts ``{"type": "image", "image": path | PIL}``."""

    model_dir: str | None = None        # None: the embedded tiny model
    adapter: str | None = None          # LoRA / DoRA / IA3 / MoE-LoRA folder from training
    quant: Quant = "auto"               # auto: 4-bit NF4 on CUDA, fp32 on CPU
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    min_pixels: int | None = DEFAULT_MIN_PIXELS
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def _llm_type(self) -> str:
        return "qwen-vl-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "adapter": self.adapter, "quant": self.quant}

    @property
    def notice(self) -> str | None:
        return model_notice(self.model_dir)

    def generator(self):
        return shared_generator(self.model_dir, self.adapter, self.quant, self.max_pixels, self.min_pixels)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                stop_event: threading.Event | None = None, max_new_tokens: int | None = None,
                temperature: float | None = None, top_p: float | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        conv = to_normalized(messages)
        gen = self.generator()
        pieces: queue.Queue = queue.Queue()
        halt = threading.Event()            # ours: set on cancel or when the consumer stops reading

        def work() -> None:
            try:
                with GENERATE_LOCK:
                    if halt.is_set():
                        pieces.put(_Done(""))
                        return
                    text = gen.generate(
                        conv, max_new_tokens=max_new_tokens or self.max_new_tokens,
                        temperature=self.temperature if temperature is None else temperature,
                        top_p=self.top_p if top_p is None else top_p,
                        on_token=pieces.put, stop_event=halt)
                pieces.put(_Done(text))
            except BaseException as e:  # handed to the consumer thread
                pieces.put(_Failed(e))

        worker = threading.Thread(target=work, name="qwen-vl-generate", daemon=True)
        worker.start()
        streamed: list[str] = []
        try:
            while True:
                try:
                    item = pieces.get(timeout=0.05)
                except queue.Empty:
                    if stop_event is not None and stop_event.is_set():
                        halt.set()
                    continue
                if isinstance(item, _Failed):
                    raise item.exc
                if isinstance(item, _Done):
                    # The streamer holds back nothing at the end, but keep the decoded text authoritative.
                    rest = item.text[len("".join(streamed)):] if item.text.startswith("".join(streamed)) else ""
                    if rest and not halt.is_set():
                        yield self._chunk(rest, run_manager)
                    return
                streamed.append(item)
                yield self._chunk(item, run_manager)
                if stop_event is not None and stop_event.is_set():
                    halt.set()
        finally:
            halt.set()          # consumer gone (cancel, error, early close): stop after this step
            # Return only once the model is free again, so "cancelled" means the GPU is idle.
            worker.join(timeout=JOIN_TIMEOUT_S)

    @staticmethod
    def _chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk
