"""Provider settings, checked: an OpenAI-compatible server's model list, the API key (kept in the OS
keyring when one is available, never in the settings file), and whether an embedder or a reranker
loads. Plain functions: the app's settings dialog runs them on a worker thread; scripts can too.
"""

from __future__ import annotations

import os

KEYRING_SERVICE = "qwen3-vl-moelora"


def keyring_available() -> bool:
    try:
        import keyring
        from keyring.backends.fail import Keyring as Failing
    except ImportError:
        return False
    return not isinstance(keyring.get_keyring(), Failing)


def load_api_key(base_url: str) -> str | None:
    """The key saved for this server, else $OPENAI_API_KEY, else None."""
    if keyring_available():
        import keyring
        try:
            key = keyring.get_password(KEYRING_SERVICE, base_url)
        except Exception:  # noqa: BLE001 (a locked or broken keyring: fall back to the environment)
            key = None
        if key:
            return key
    return os.environ.get("OPENAI_API_KEY") or None


def save_api_key(base_url: str, key: str) -> bool:
    """Keep ``key`` for ``base_url`` in the OS keyring; False when there is none (then the key
    lives only as long as the app runs: it is never written to the settings file)."""
    if not keyring_available():
        return False
    import keyring
    try:
        if key:
            keyring.set_password(KEYRING_SERVICE, base_url, key)
        else:
            keyring.delete_password(KEYRING_SERVICE, base_url)
    except Exception:  # noqa: BLE001 (nothing saved yet, or a keyring that refuses: session only)
        return not key
    return True


def server_models(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> list[str]:
    """The model names an OpenAI-compatible server lists; one line when it cannot be asked."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                    timeout=timeout, max_retries=0)
    try:
        names = [m.id for m in client.models.list()]
    except Exception as e:  # noqa: BLE001 (connection refused, 401, not OpenAI-compatible, ...)
        raise RuntimeError(f"{base_url}: cannot list models ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]})") from None
    if not names:
        raise RuntimeError(f"{base_url}: the server lists no models")
    return names


def check_embedder(name: str | None) -> str:
    """Load the embedder (the default when empty); "<name>: N-dim vectors" or RuntimeError."""
    from multi_agent.rag.config import DEFAULT_EMBEDDER
    from multi_agent.rag.embed import get_embedder

    name = name or DEFAULT_EMBEDDER
    return f"{name}: {get_embedder(name).dim}-dim vectors"


def check_reranker(name: str | None) -> str:
    """Load the cross-encoder; says plainly when none is set or it is not on this machine."""
    from multi_agent.rag.rerank import get_reranker

    if not name or name.strip().lower() in ("none", "off"):
        return "no reranker: the fused BM25 + vector order is kept"
    if get_reranker(name) is None:
        raise RuntimeError(f"{name}: not available on this machine (a local path or a model in the Hugging "
                           "Face cache is needed; nothing is downloaded)")
    return f"{name}: loaded"
