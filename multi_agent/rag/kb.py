"""KnowledgeBase: the one object agents, the GUI, the MCP server and the CLI use.

    kb = KnowledgeBase(RagConfig(kb_dir=Path("multi_agent/knowledge_base")))
    kb.index()                       # incremental; only changed files are embedded
    hits = kb.search("如何微调 MoE-LoRA?", k=5)

search: BM25 (jieba) top-N and dense top-N -> RRF (dedup by chunk id) -> cross-encoder
rerank of the fused top ``rerank_top_n`` -> top k. The index is loaded once and reloaded
only when another run committed a new version.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from .config import RagConfig
from .embed import Embedder, get_embedder
from .fusion import rrf
from .index import (Progress, Snapshot, build_index, classify, current_version, display_name, inside,
                    load_snapshot, recorded_settings, scan, sha256_file)
from .rerank import get_reranker
from .schema import Hit, IndexReport
from .tokenize import cjk_ratio, tokenize

log = logging.getLogger(__name__)


class IndexMismatch(RuntimeError):
    """The index on disk was built with settings a search cannot use (one-line message)."""


class KnowledgeBase:
    def __init__(self, config: RagConfig | None = None, **overrides):
        cfg = config or RagConfig()
        self.config = cfg.replace(**overrides) if overrides else cfg
        self._snap: Snapshot | None = None
        self._lock = threading.RLock()
        self._runs = 0          # index runs in progress in this process (a search then never builds)

    # -- components (lazy: the embedder load is the slow part) ------------------------------
    @property
    def kb_dir(self) -> Path:
        return self.config.kb_dir

    def settings(self) -> RagConfig:
        """The config with the embedder and chunking the index on disk was built with filled in."""
        return self.config.resolved(recorded_settings(self.config.index_dir))

    @property
    def embedder(self) -> Embedder:
        cfg = self.settings()
        return get_embedder(cfg.embedder, cfg.device, cfg.embed_backend)

    def has_documents(self) -> bool:
        """Is there anything to search: indexed files, or indexable files in the folder (the first
        search indexes them). The one place this is decided (agents, GUI, MCP)."""
        try:
            if self.files():
                return True
        except Exception:  # noqa: BLE001 (an unreadable index is reported by the search itself)
            return True
        return bool(scan(self.config.kb_dir, self.config.index_dir, self.config.ocr).files)

    # -- indexing ---------------------------------------------------------------------------
    def index(self, progress: Progress | None = None, *, only: list[str] | None = None,
              cancel: threading.Event | None = None) -> IndexReport:
        """Index new/changed files, drop deleted ones; returns what was done.

        ``only``: paths relative to kb_dir; just these are (re)indexed or dropped. ``cancel``: an
        event that stops the run after the current embedding batch, keeping the finished files."""
        with self._lock:
            self._runs += 1
        try:
            report = build_index(self.config, self.embedder, progress, only=only, cancel=cancel)
        finally:
            with self._lock:
                self._runs -= 1
        with self._lock:
            if self._snap is None or self._snap.version != report.version:
                self._snap = None  # next search loads the new version
        return report

    def add_files(self, paths: list[Path], progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> IndexReport:
        """Copy documents from outside into kb_dir (name clashes get -1, -2...), then index just them.

        Files already inside kb_dir are indexed where they are, unless they are symlinks that lead
        out of it (never read). Non-documents (images, ...) are not copied: they are counted in
        ``report.ignored``."""
        kb_dir = self.config.kb_dir
        kb_dir.mkdir(parents=True, exist_ok=True)
        rels, refused, ignored = [], [], []
        for src in map(Path, paths):
            src = src.expanduser().absolute()
            if not src.is_file():
                raise FileNotFoundError(f"{display_name(str(src))}: no such file")
            if src.is_relative_to(kb_dir.absolute()):        # named inside the knowledge base
                verdict = classify(src, kb_dir, self.config.ocr)
                rel = src.relative_to(kb_dir.absolute()).as_posix()
                if verdict is None:
                    rels.append(rel)
                else:
                    (refused if verdict[0] == "skipped" else ignored).append((rel, verdict[1]))
                continue
            if inside(src, kb_dir):                           # a path from outside that leads inside
                rels.append(src.resolve().relative_to(kb_dir.resolve()).as_posix())
                continue
            verdict = classify(src, src.parent, self.config.ocr)
            if verdict is not None and verdict[0] == "ignored":
                ignored.append((src.name, verdict[1]))
                continue
            dest = kb_dir / src.name
            n = 0
            while dest.exists() and sha256_file(dest) != sha256_file(src):
                n += 1
                dest = kb_dir / f"{src.stem}-{n}{src.suffix}"
            if not dest.exists():
                shutil.copy2(src, dest)
            rels.append(dest.relative_to(kb_dir).as_posix())
        report = self.index(progress, only=rels, cancel=cancel) if rels else IndexReport()
        report.skipped += refused
        report.ignored += ignored
        return report

    def files(self) -> list[dict]:
        """Indexed files: path (relative to kb_dir), sha256, chunks, pages."""
        snap = self._snapshot(build=False)
        if snap is None:
            return []
        return [{"path": rel, "sha256": f["sha256"], "chunks": f["chunks"], "pages": f["pages"]}
                for rel, f in sorted(snap.manifest["files"].items())]

    def skipped(self) -> list[tuple[str, str]]:
        snap = self._snapshot(build=False)
        return [] if snap is None else [(r, s["reason"]) for r, s in sorted(snap.manifest["skipped"].items())]

    # -- search -----------------------------------------------------------------------------
    def _snapshot(self, build: bool = True) -> Snapshot | None:
        with self._lock:
            version = current_version(self.config.index_dir)
            if version is None and build and not self._runs:
                log.warning("no index in %s yet: building it once", self.config.index_dir)
                self.index()
                version = current_version(self.config.index_dir)
            if self._snap is None or self._snap.version != version:
                self._snap = load_snapshot(self.config) if version else None
            return self._snap

    def search(self, query: str, k: int = 5, rerank: bool = True) -> list[Hit]:
        query = (query or "").strip()
        snap = self._snapshot()
        if not query or snap is None or not snap.chunks:
            return []
        cfg = self._check_settings(snap)
        n = cfg.candidates
        sparse = [(snap.chunks[row], s) for row, s in snap.sparse.search(tokenize(query), n)]
        dense = []
        if snap.store is not None:
            qv = get_embedder(cfg.embedder, cfg.device, cfg.embed_backend).encode([query])[0]
            # Over-fetch: a shared store (Milvus) may still hold ids of an older version.
            for vid, s in snap.store.search(qv, n + 16 if snap.store.shared else n):
                row = snap.row_of.get(vid)
                if row is not None:
                    dense.append((snap.chunks[row], s))
            dense = dense[:n]
        w_bm25, w_dense = cfg.weights[0], cfg.dense_weight_for(cjk_ratio(query) >= 0.5)
        fused = rrf({"bm25": [c.chunk_id for c, _ in sparse], "dense": [c.chunk_id for c, _ in dense]},
                    {"bm25": w_bm25, "dense": w_dense}, k=cfg.rrf_k)
        by_id = {c.chunk_id: c for c, _ in sparse + dense}
        bm25_s = {c.chunk_id: s for c, s in sparse}
        dense_s = {c.chunk_id: s for c, s in dense}

        reranker = get_reranker(cfg.reranker, cfg.device) if rerank else None
        rerank_s: dict[str, float] = {}
        if reranker is not None and fused:
            top = fused[:max(cfg.rerank_top_n, k)]
            scores = reranker.score(query, [by_id[cid].text for cid, _ in top])
            rerank_s = {cid: float(s) for (cid, _), s in zip(top, scores)}
            order = sorted(range(len(top)), key=lambda i: (-scores[i], i))
            fused = [top[i] for i in order] + fused[len(top):]

        hits = []
        for rank, (cid, rrf_score) in enumerate(fused[:k], start=1):
            c = by_id[cid]
            hits.append(Hit(chunk_id=cid, text=c.text, source=c.source, page=c.page, start=c.start, end=c.end,
                            score=rerank_s.get(cid, rrf_score),
                            scores={"bm25": bm25_s.get(cid), "dense": dense_s.get(cid), "rrf": rrf_score,
                                    "rerank": rerank_s.get(cid)},
                            rank=rank))
        return hits

    def _check_settings(self, snap: Snapshot) -> RagConfig:
        """The settings to search ``snap`` with: its own embedder unless another was asked for
        explicitly, which is refused in one line (its vectors would not be comparable)."""
        recorded = snap.manifest.get("settings", {})
        cfg = self.config.resolved(recorded)
        built_with = recorded.get("embedder")
        if built_with and cfg.embedder != built_with:
            raise IndexMismatch(
                f"the index in {self.config.index_dir} was built with embedder '{built_with}', not "
                f"'{cfg.embedder}': search without --embedder, or re-index with `python -m multi_agent.rag "
                f"index --embedder {cfg.embedder}`")
        return cfg

    def source_text(self, source: str, page: int | None = None) -> str:
        """The text a hit's ``start``/``end`` offsets point into: the whole text file, or the PDF /
        slide / sheet page, loaded the way the indexer loaded it. Only files inside the folder."""
        from .loaders import load_file

        path = self.config.kb_dir / source
        if not inside(path, self.config.kb_dir) or not path.is_file():
            raise FileNotFoundError(f"{display_name(source)}: not a file in {self.config.kb_dir}")
        for p, text in load_file(path, ocr=self.config.ocr).pages:
            if p == page or page is None:
                return text
        raise FileNotFoundError(f"{display_name(source)}: no page {page}")

    def as_retriever(self, k: int = 5, rerank: bool = True):
        """A LangChain BaseRetriever over this knowledge base."""
        from .langchain import KnowledgeBaseRetriever

        return KnowledgeBaseRetriever(kb=self, k=k, rerank=rerank)
