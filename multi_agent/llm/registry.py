"""Backend name -> chat-model factory. Kept apart from ``base`` (the interface the backends import),
so that the interface never refers back to its implementations."""

from __future__ import annotations

from typing import Any, Callable

from langchain_core.language_models.chat_models import BaseChatModel


def _local(**kw: Any) -> BaseChatModel:
    from multi_agent.llm.local import LocalVLChatModel
    return LocalVLChatModel(**kw)


def _openai(**kw: Any) -> BaseChatModel:
    from multi_agent.llm.openai_compat import OpenAICompatChatModel
    return OpenAICompatChatModel(**kw)


def _scripted(**kw: Any) -> BaseChatModel:
    from multi_agent.llm.scripted import ScriptedChatModel
    return ScriptedChatModel(**kw)


CHAT_MODELS: dict[str, Callable[..., BaseChatModel]] = {
    "local": _local,
    "openai": _openai,
    "scripted": _scripted,
}


def make_chat_model(name: str, **kwargs: Any) -> BaseChatModel:
    """``make_chat_model("local", model_dir=..., adapter=...)``; unknown names fail in one line."""
    if name not in CHAT_MODELS:
        raise ValueError(f"backend: {name!r} is not one of {', '.join(CHAT_MODELS)}")
    return CHAT_MODELS[name](**kwargs)
