"""Chat models for the assistant: local Qwen-VL, OpenAI-compatible endpoints, scripted (tests)."""

from multi_agent.llm.base import GenerationCancelled, generate_text
from multi_agent.llm.registry import CHAT_MODELS, make_chat_model

__all__ = ["CHAT_MODELS", "GenerationCancelled", "generate_text", "make_chat_model"]
