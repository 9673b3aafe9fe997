"""Any OpenAI-compatible chat endpoint by URL (vLLM, Ollama, LM Studio, llama.cpp server).

    vLLM:      http://localhost:8000/v1     (vllm serve Qwen/Qwen3-VL-4B-Instruct)
    Ollama:    http://localhost:11434/v1
    LM Studio: http://localhost:1234/v1

Images travel as base64 data URLs in ``image_url`` parts, which all three accept.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import PrivateAttr

from multi_agent.llm.base import StreamingChatModel, to_normalized


def image_url(image: Any) -> str:
    """A data URL for a path or PIL image; http(s) and data URLs pass through."""
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        return image
    if isinstance(image, (str, Path)):
        path = Path(str(image).removeprefix("file://"))
        if not path.is_file():
            raise ValueError(f"{path}: image file not found")
        mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
        data = path.read_bytes()
    else:  # PIL
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        mime, data = "image/png", buf.getvalue()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def to_openai(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    out = []
    for m in to_normalized(messages):
        parts = m["content"]
        if all(p["type"] == "text" for p in parts):
            out.append({"role": m["role"], "content": "".join(p["text"] for p in parts)})
            continue
        content = [{"type": "text", "text": p["text"]} if p["type"] == "text"
                   else {"type": "image_url", "image_url": {"url": image_url(p["image"])}} for p in parts]
        out.append({"role": m["role"], "content": content})
    return out


class OpenAICompatChatModel(StreamingChatModel):
    base_url: str = "http://localhost:8000/v1"
    model: str = ""                 # empty: the first model the server lists
    api_key: str | None = None      # None: $OPENAI_API_KEY, else "EMPTY" (local servers ignore it)
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    timeout: float = 120.0
    http_client: Any = None         # an httpx.Client (tests, proxies)
    _client: Any = PrivateAttr(default=None)
    _model_name: str | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model}

    @property
    def notice(self) -> str | None:
        return None

    def client(self):
        if self._client is None:
            from openai import OpenAI
            self._client = OpenAI(base_url=self.base_url, timeout=self.timeout,
                                  api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                                  http_client=self.http_client, max_retries=1)
        return self._client

    def model_name(self) -> str:
        if self.model:
            return self.model
        if self._model_name is None:
            models = list(self.client().models.list())
            if not models:
                raise RuntimeError(f"{self.base_url}: the server lists no models; pass a model name")
            self._model_name = models[0].id
        return self._model_name

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                stop_event: threading.Event | None = None, max_new_tokens: int | None = None,
                temperature: float | None = None, top_p: float | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        request: dict[str, Any] = dict(
            model=self.model_name(), messages=to_openai(messages), stream=True,
            max_tokens=max_new_tokens or self.max_new_tokens,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p if top_p is None else top_p)
        if stop:
            request["stop"] = stop
        stream = self.client().chat.completions.create(**request)
        try:
            for event in stream:
                if stop_event is not None and stop_event.is_set():
                    return
                if not event.choices:
                    continue
                text = event.choices[0].delta.content or ""
                if text:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager:
                        run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
        finally:
            stream.close()        # drops the HTTP connection: the server stops generating
