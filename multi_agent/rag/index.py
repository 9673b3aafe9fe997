"""Persistent, incremental, crash-safe index beside the knowledge base.

Layout of ``index_dir``::

    CURRENT              name of the live version (replaced atomically)
    v-000007/            manifest.json, chunks.jsonl, bm25/, faiss.index (FAISS only)
    .tmp-<random>/       a version being written; removed by the next run if left over

A run hashes every file, processes only added/changed/deleted ones, writes a complete new
version into a temp folder, renames it, and only then points CURRENT at it. A run killed
at any moment leaves CURRENT on the previous, complete version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from vlft.utils.io import atomic_write, write_json

from .chunking import chunk_text
from .config import RagConfig
from .embed import Embedder
from .loaders import SkipFile, load_file, supported
from .schema import Chunk, IndexReport
from .sparse import SparseIndex
from .stores import VectorStore, open_store
from .tokenize import tokenize

log = logging.getLogger(__name__)
FORMAT = 1
CURRENT = "CURRENT"
Progress = Callable[[int, int, str], None]


def _checkpoint(stage: str) -> None:
    """No-op between the steps of a commit; crash tests patch it to raise or to hang."""


@dataclass
class Snapshot:
    """One loaded index version: chunk table, BM25, and the vector store."""

    version: str
    manifest: dict
    chunks: list[Chunk]
    sparse: SparseIndex
    store: VectorStore | None

    def __post_init__(self):
        self.row_of = {c.vid: i for i, c in enumerate(self.chunks)}


# -- reading --------------------------------------------------------------------------------
def current_version(index_dir: Path) -> str | None:
    try:
        name = (index_dir / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name if name and (index_dir / name / "manifest.json").exists() else None


def _read_chunks(path: Path) -> list[Chunk]:
    with open(path, encoding="utf-8") as f:
        return [Chunk(**json.loads(line)) for line in f if line.strip()]


def load_snapshot(cfg: RagConfig, with_store: bool = True) -> Snapshot | None:
    version = current_version(cfg.index_dir)
    if version is None:
        return None
    vdir = cfg.index_dir / version
    manifest = json.loads((vdir / "manifest.json").read_text(encoding="utf-8"))
    chunks = _read_chunks(vdir / "chunks.jsonl")
    store = None
    if with_store and manifest.get("dim"):
        store = open_store(cfg, int(manifest["dim"]), vdir)
    return Snapshot(version, manifest, chunks, SparseIndex.load(vdir / "bm25"), store)


# -- scanning -------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan(kb_dir: Path, index_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Indexable files (sorted) and unsupported ones; hidden files/folders and the index skipped."""
    files, skipped = [], []
    if not kb_dir.is_dir():
        return files, skipped
    index_dir = index_dir.resolve()
    for root, dirs, names in os.walk(kb_dir):
        root_p = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_p / d).resolve() != index_dir)
        for name in sorted(names):
            if name.startswith("."):
                continue
            p = root_p / name
            (files if supported(p) else skipped).append(p)
    return files, [(p.relative_to(kb_dir).as_posix(), f"unsupported file type '{p.suffix}'")
                   for p in skipped]


def chunk_file(path: Path, rel: str, cfg: RagConfig, first_vid: int) -> tuple[list[Chunk], int]:
    """Load + chunk + tokenize one file. Returns (chunks, pages); raises SkipFile."""
    doc = load_file(path)
    chunks: list[Chunk] = []
    for page, text in doc.pages:
        for span in chunk_text(text, cfg.chunk_size, cfg.chunk_overlap):
            piece = text[span.start:span.end]
            chunks.append(Chunk(vid=first_vid + len(chunks), chunk_id=f"{rel}#{len(chunks)}", source=rel,
                                page=page, start=span.start, end=span.end, text=piece,
                                tokens=tokenize(piece)))
    if not chunks:
        raise SkipFile("no text to index")
    return chunks, len(doc.pages) if doc.pages[0][0] is not None else 1


# -- writing --------------------------------------------------------------------------------
@contextlib.contextmanager
def _lock(index_dir: Path) -> Iterator[None]:
    """One indexer at a time per index (searches never wait: they read complete versions)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    f = open(index_dir / ".lock", "a+")
    try:
        try:
            import fcntl
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except ImportError:  # Windows: best effort
            pass
        yield
    finally:
        f.close()


def _settings(cfg: RagConfig) -> dict:
    """Anything that, when changed, invalidates every stored chunk or vector."""
    return {"format": FORMAT, "embedder": cfg.embedder, "chunk_size": cfg.chunk_size,
            "chunk_overlap": cfg.chunk_overlap, "store": cfg.store,
            "milvus": [cfg.resolved_milvus_uri, cfg.milvus_collection] if cfg.store == "milvus" else None,
            "tokenizer": 1}


def _clean_leftovers(index_dir: Path, keep: str | None) -> None:
    for p in index_dir.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp-") or (p.name.startswith("v-") and p.name != keep)):
            shutil.rmtree(p, ignore_errors=True)


def _next_version(index_dir: Path, current: str | None) -> str:
    n = int(current.split("-")[1]) + 1 if current else 1
    while (index_dir / f"v-{n:06d}").exists():
        n += 1
    return f"v-{n:06d}"


def build_index(cfg: RagConfig, embedder: Embedder, progress: Progress | None = None) -> IndexReport:
    """Bring the index in line with ``cfg.kb_dir``; only new/changed files are embedded."""
    t0 = time.perf_counter()
    kb_dir, index_dir = cfg.kb_dir, cfg.index_dir
    report = IndexReport()
    with _lock(index_dir):
        old = load_snapshot(cfg, with_store=False)
        _clean_leftovers(index_dir, old.version if old else None)
        settings = _settings(cfg)
        full = old is None or old.manifest.get("settings") != settings
        if old is not None and full:
            log.warning("index settings changed (%s): rebuilding every file", cfg.index_dir)
        old_files: dict = {} if full else old.manifest["files"]
        old_skipped: dict = {} if full else old.manifest.get("skipped", {})
        by_source: dict[str, list[Chunk]] = {}
        if not full:
            for c in old.chunks:
                by_source.setdefault(c.source, []).append(c)
        next_vid = old.manifest.get("next_vid", 0) if old else 0

        paths, unsupported = scan(kb_dir, index_dir)
        report.skipped += unsupported
        files, skipped, kept, new_chunks, removed_vids = {}, {}, [], [], []
        todo = []
        for p in paths:
            rel = p.relative_to(kb_dir).as_posix()
            try:
                digest = sha256_file(p)
            except OSError as e:
                report.skipped.append((rel, f"cannot read file ({e.strerror or e})"))
                continue
            if rel in old_files and old_files[rel]["sha256"] == digest:
                files[rel] = old_files[rel]
                kept += by_source.get(rel, [])
                report.unchanged += 1
            elif rel in old_skipped and old_skipped[rel]["sha256"] == digest:
                skipped[rel] = old_skipped[rel]
                report.skipped.append((rel, old_skipped[rel]["reason"]))
            else:
                todo.append((p, rel, digest))

        for i, (p, rel, digest) in enumerate(todo):
            if progress:
                progress(i, len(todo), rel)
            removed_vids += [c.vid for c in by_source.get(rel, [])]
            try:
                chunks, pages = chunk_file(p, rel, cfg, next_vid)
            except SkipFile as e:
                skipped[rel] = {"sha256": digest, "reason": str(e)}
                report.skipped.append((rel, str(e)))
                log.info("skip %s: %s", rel, e)
                if rel in old_files:
                    report.changed += 1
                continue
            next_vid += len(chunks)
            files[rel] = {"sha256": digest, "chunks": len(chunks), "pages": pages,
                          "size": p.stat().st_size}
            new_chunks.append(chunks)
            if rel in old_files:
                report.changed += 1
            else:
                report.added += 1
        if progress:
            progress(len(todo), len(todo), "")
        deleted = [rel for rel in old_files if rel not in files and rel not in skipped]
        for rel in deleted:
            removed_vids += [c.vid for c in by_source.get(rel, [])]
        report.deleted = len(deleted)
        report.chunks = len(kept) + sum(len(c) for c in new_chunks)

        if not full and not todo and not deleted and set(skipped) == set(old_skipped):
            report.version, report.seconds = old.version, time.perf_counter() - t0
            return report  # nothing to do: no new version

        added_flat = [c for cs in new_chunks for c in cs]
        vectors = embedder.encode([c.text for c in added_flat], batch_size=cfg.batch_size,
                                  progress=len(added_flat) > 256 and progress is None)
        report.embedded = len(added_flat)
        if added_flat:
            dim = int(vectors.shape[1])
        elif old is not None and not full and old.manifest.get("dim"):
            dim = int(old.manifest["dim"])
        else:
            dim = embedder.dim
        version = _next_version(index_dir, old.version if old else None)
        tmp = index_dir / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        store = open_store(cfg, dim, None if full else index_dir / old.version)
        if full:
            store.reset()
        store.add(np.array([c.vid for c in added_flat], dtype=np.int64), vectors)
        _checkpoint("vectors-added")
        removed = np.array(removed_vids, dtype=np.int64)
        if not store.shared:
            store.remove(removed)
        all_chunks = kept + added_flat
        with atomic_write(tmp / "chunks.jsonl") as f:
            for c in all_chunks:
                f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
        _checkpoint("chunks-written")
        SparseIndex.build([c.tokens for c in all_chunks]).save(tmp / "bm25")
        store.save(tmp)
        _checkpoint("store-saved")
        write_json(tmp / "manifest.json", {
            "settings": settings, "dim": dim, "next_vid": next_vid, "chunks": len(all_chunks),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files, "skipped": skipped})
        _fsync_dir(tmp)
        os.replace(tmp, index_dir / version)
        _checkpoint("version-renamed")
        with atomic_write(index_dir / CURRENT) as f:
            f.write(version + "\n")
        _fsync_dir(index_dir)
        _checkpoint("committed")
        if store.shared:  # now no live version references them
            store.remove(removed)
        _clean_leftovers(index_dir, version)
        report.version, report.seconds = version, time.perf_counter() - t0
        return report


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
