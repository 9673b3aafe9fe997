"""The chat-model interface every agent talks to (the name -> factory table is in registry.py).

A chat model is a LangChain ``BaseChatModel``. Three backends:

* ``local``    the fine-tuned Qwen-VL in this process (``vlft.infer.VLGenerator``)
* ``openai``   any OpenAI-compatible endpoint by URL (vLLM, Ollama, LM Studio)
* ``scripted`` deterministic canned answers for tests and offline demos

Messages carry images as content parts; :func:`to_normalized` turns LangChain messages
into the project's normalized sample format (COCO-style ``{"type": "image", "image": ...}``).
:func:`generate_text` is the one call the agents make: it streams, reports tokens and
stops early when a cancel event is set, whatever the backend.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

ChatModel = BaseChatModel
TokenCallback = Callable[[str], None]


class GenerationCancelled(Exception):
    """Raised by :func:`generate_text` when the cancel event was set; carries the partial text."""

    def __init__(self, partial: str = ""):
        super().__init__("generation cancelled")
        self.partial = partial


class StreamingChatModel(BaseChatModel):
    """A backend implements ``_stream`` only; the non-streaming call joins its chunks."""

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = "".join(c.message.content for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


# -- one streamed call with cancellation ---------------------------------------------------
def generate_text(model: BaseChatModel, messages: Sequence[BaseMessage],
                  on_token: TokenCallback | None = None,
                  cancel: threading.Event | None = None, **kwargs: Any) -> str:
    """Stream ``messages`` through ``model``; returns the full text.

    ``cancel`` is handed to the backend as ``stop_event`` (the local model stops between
    tokens) and also checked here between chunks, so every backend honours it.
    Raises :class:`GenerationCancelled` when it was set.
    """
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled("")
    parts: list[str] = []
    stream = model.stream(list(messages), stop_event=cancel, **kwargs)
    try:
        for chunk in stream:
            text = chunk.content if isinstance(chunk.content, str) else _text_of(chunk.content)
            if text:
                parts.append(text)
                if on_token is not None:
                    on_token(text)
            if cancel is not None and cancel.is_set():
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    text = "".join(parts)
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled(text)
    return text


# -- message conversion -------------------------------------------------------------------
def image_part(image: Any) -> dict[str, Any]:
    """A content part for an image given as a path or a PIL image."""
    if isinstance(image, Path):
        image = str(image.resolve())
    return {"type": "image", "image": image}


def user_message(text: str, images: Iterable[Any] = ()) -> HumanMessage:
    """A user turn with the images first (Qwen-VL's own chat examples put them first)."""
    parts = [image_part(im) for im in images]
    if not parts:
        return HumanMessage(content=text)
    return HumanMessage(content=[*parts, {"type": "text", "text": text}])


_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def to_normalized(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> ``[{"role", "content": [{"type": "image"|"text", ...}]}]``.

    Accepts image parts in the normalized form (``image``: path or PIL), the LangChain v1
    standard form (``url`` / ``base64`` / ``path``) and OpenAI's ``image_url``.
    Consecutive messages of the same role are kept separate (the template handles them).
    """
    out = []
    for m in messages:
        role = _ROLES.get(m.type)
        if role is None:
            raise ValueError(f"message type {m.type!r} is not supported (system/human/ai only)")
        content = m.content
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        else:
            for p in content:
                if isinstance(p, str):
                    parts.append({"type": "text", "text": p})
                elif p.get("type") == "text":
                    parts.append({"type": "text", "text": p.get("text", "")})
                elif p.get("type") in ("image", "image_url"):
                    parts.append({"type": "image", "image": _image_source(p)})
                else:
                    raise ValueError(f"content part type {p.get('type')!r} is not supported")
        out.append({"role": role, "content": parts})
    return out


def _image_source(part: dict[str, Any]) -> Any:
    """Path, PIL image or decoded data URL for one image part."""
    if "image" in part:
        src = part["image"]
        return str(src) if isinstance(src, Path) else src
    if part.get("type") == "image_url":
        url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
    elif "base64" in part:
        return _decode_b64(part["base64"])
    else:
        url = part.get("url") or part.get("path")
    if url is None:
        raise ValueError("image part has no image/url/path/base64")
    if url.startswith("data:"):
        return _decode_b64(url.split(",", 1)[1])
    if url.startswith("file://"):
        return url[len("file://"):]
    return url


def _decode_b64(data: str):
    from PIL import Image
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p if isinstance(p, str) else p.get("text", "") for p in content
                   if isinstance(p, str) or p.get("type") == "text")


def message_text(message: BaseMessage) -> str:
    """The text parts of a message, joined (images dropped)."""
    return _text_of(message.content)


__all__ = [
    "AIMessage", "BaseMessage", "ChatModel", "GenerationCancelled", "HumanMessage",
    "SystemMessage", "TokenCallback", "generate_text", "image_part",
    "message_text", "to_normalized", "user_message",
]
