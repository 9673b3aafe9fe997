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
import threading
import uuid
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from vlft.utils.io import atomic_write, sha256_file, write_json

from .chunking import chunk_text
from .config import INDEX_DIRNAME, LEGACY_EMBED_BACKEND, RagConfig
from .embed import Embedder
from .loaders import SkipFile, load_file, supported
from .schema import Chunk, IndexProgress, IndexReport
from .sparse import SparseIndex
from .stores import VectorStore, open_store
from .tokenize import tokenize

log = logging.getLogger(__name__)
FORMAT = 1
SEEN_CAP = 20_000    # vectors remembered per run for repeated chunk texts (~30 MB at 384 dims)
CURRENT = "CURRENT"
Progress = Callable[[IndexProgress], None]


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
def display_name(rel: str) -> str:
    """A path as shown to people: control characters (a newline in a file name) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in rel)


def inside(path: Path, kb_dir: Path) -> bool:
    """Does ``path``, symlinks resolved, lie inside ``kb_dir``?"""
    try:
        return path.resolve().is_relative_to(kb_dir.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


@dataclass
class ScanResult:
    """What a folder scan found: files to index, files refused with a reason (shown to the user),
    and non-documents ignored quietly (only counted: images, hidden files, ...)."""

    files: list[Path] = dc_field(default_factory=list)
    skipped: list[tuple[str, str]] = dc_field(default_factory=list)
    ignored: list[tuple[str, str]] = dc_field(default_factory=list)


def classify(path: Path, kb_dir: Path, ocr: bool = False) -> tuple[str, str] | None:
    """None if ``path`` (inside kb_dir by name) may be indexed, else ("skipped"|"ignored", reason)."""
    if path.name.startswith("."):
        return "ignored", "hidden file (name starts with '.')"
    if path.is_symlink() and not inside(path, kb_dir):
        return "skipped", (f"symlink to {display_name(str(path.resolve()))}, outside the knowledge-base "
                           "folder: not read")
    if not supported(path, ocr):
        return "ignored", f"not a document type the indexer reads ('{path.suffix or path.name}')"
    return None


def scan(kb_dir: Path, index_dir: Path, ocr: bool = False) -> ScanResult:
    """Every file under ``kb_dir`` sorted into indexable / skipped / ignored; index folders (uncounted)
    and hidden folders (counted) are not entered, and nothing whose real path is outside ``kb_dir`` is read."""
    out = ScanResult()
    if not kb_dir.is_dir():
        return out
    index_dir = index_dir.resolve()
    for root, dirs, names in os.walk(kb_dir):
        root_p = Path(root)
        keep = []
        for d in sorted(dirs):
            p = root_p / d
            rel = p.relative_to(kb_dir).as_posix()
            if p.resolve() == index_dir or (root_p == kb_dir and d == INDEX_DIRNAME):
                continue  # an index (this one, or the folder's own when this one lives elsewhere): not content
            if d.startswith("."):
                out.ignored.append((rel + "/", "hidden folder (name starts with '.')"))
            elif p.is_symlink():
                if inside(p, kb_dir):
                    out.ignored.append((rel + "/", "symlinked folder (its files are indexed where they are)"))
                else:
                    out.skipped.append((rel + "/", f"symlink to {display_name(str(p.resolve()))}, outside the "
                                                   "knowledge-base folder: not read"))
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            p = root_p / name
            verdict = classify(p, kb_dir, ocr)
            if verdict is None:
                out.files.append(p)
            else:
                getattr(out, verdict[0]).append((p.relative_to(kb_dir).as_posix(), verdict[1]))
    return out


def chunk_file(path: Path, rel: str, cfg: RagConfig, first_vid: int) -> tuple[list[Chunk], int]:
    """Load + chunk + tokenize one file. Returns (chunks, pages); raises SkipFile."""
    doc = load_file(path, ocr=cfg.ocr)
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
    return {"format": FORMAT, "embedder": cfg.embedder, "embed_backend": cfg.embed_backend,
            "chunk_size": cfg.chunk_size, "chunk_overlap": cfg.chunk_overlap, "store": cfg.store,
            "milvus": [cfg.resolved_milvus_uri, cfg.milvus_collection] if cfg.store == "milvus" else None,
            "tokenizer": 1}


def _recorded(manifest: dict) -> dict:
    """A manifest's settings; one written before ``embed_backend`` existed was embedded with torch."""
    return {"embed_backend": LEGACY_EMBED_BACKEND, **manifest.get("settings", {})}


def recorded_settings(index_dir: Path) -> dict | None:
    """The settings the live index was built with (embedder, chunking), or None without an index."""
    version = current_version(index_dir)
    if version is None:
        return None
    try:
        return json.loads((index_dir / version / "manifest.json").read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError):
        return None


def _clean_leftovers(index_dir: Path, keep: str | None) -> None:
    for p in index_dir.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp-") or (p.name.startswith("v-") and p.name != keep)):
            shutil.rmtree(p, ignore_errors=True)


def _next_version(index_dir: Path, current: str | None) -> str:
    n = int(current.split("-")[1]) + 1 if current else 1
    while (index_dir / f"v-{n:06d}").exists():
        n += 1
    return f"v-{n:06d}"


def _size_text(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


class _Run:
    """One indexing run: files are loaded and chunked one by one, their chunks embedded in blocks
    (memory stays bounded by a block, not by the whole folder), and the files finished so far are
    committed as a new version every ``commit_seconds``, at the end, and on cancel; so a run that is
    stopped or killed keeps what it finished and the next run resumes from there."""

    def __init__(self, cfg: RagConfig, embedder: Embedder, progress: Progress | None,
                 cancel: threading.Event | None, report: IndexReport):
        self.cfg, self.embedder, self.progress, self.cancel, self.report = cfg, embedder, progress, cancel, report
        self.index_dir = cfg.index_dir
        self.old = load_snapshot(cfg, with_store=False)
        self.settings = _settings(cfg)
        # What the embedder really runs (an ONNX backend falls back to torch where it cannot run).
        self.settings["embed_backend"] = getattr(embedder, "backend", cfg.embed_backend)
        self.full = self.old is None or _recorded(self.old.manifest) != self.settings
        if self.old is not None and self.full:
            log.warning("index settings changed (%s): rebuilding every file", cfg.index_dir)
        self.old_files: dict = {} if self.full else dict(self.old.manifest["files"])
        self.old_skipped: dict = {} if self.full else dict(self.old.manifest.get("skipped", {}))
        self.by_source: dict[str, list[Chunk]] = {}
        if not self.full:
            for c in self.old.chunks:
                self.by_source.setdefault(c.source, []).append(c)
        self.next_vid = self.old.manifest.get("next_vid", 0) if self.old else 0
        self.version = self.old.version if self.old else None
        self.dim = int(self.old.manifest["dim"]) if self.old and not self.full and self.old.manifest.get("dim") \
            else None
        self.store: VectorStore | None = None
        # The state a commit writes: rel -> manifest entry / chunks.
        self.files: dict[str, dict] = {}
        self.chunks: dict[str, list[Chunk]] = {}
        self.skipped: dict[str, dict] = {}
        self.removed_vids: list[int] = []
        self.pending: list[tuple[str, dict, list[Chunk]]] = []   # chunked, not yet embedded
        self.seen: dict[bytes, np.ndarray] = {}    # text digest -> vector, for repeated chunks
        self.dirty = False
        self.files_done = self.files_total = 0
        self.chunks_done = self.chunks_known = 0
        self.in_flight = (0, 0, 0)     # chunks embedded / to embed / files, of the block being embedded
        self.last_commit = time.monotonic()

    # -- state ----------------------------------------------------------------------------
    def keep_old(self, rel: str) -> None:
        self.files[rel] = self.old_files[rel]
        self.chunks[rel] = self.by_source.get(rel, [])

    def keep_old_skip(self, rel: str) -> None:
        self.skipped[rel] = self.old_skipped[rel]
        self.report.skipped.append((rel, self.old_skipped[rel]["reason"]))

    def skip(self, rel: str, digest: str | None, reason: str) -> None:
        entry = {"sha256": digest, "reason": reason, "ocr": self.cfg.ocr}
        if self.old_skipped.get(rel) != entry:
            self.dirty = True
        self.skipped[rel] = entry
        self.report.skipped.append((rel, reason))
        log.info("skip %s: %s", display_name(rel), reason)
        if rel in self.old_files:
            self.drop_old(rel)
            self.report.changed += 1

    def drop_old(self, rel: str) -> None:
        """Forget the previous version of ``rel`` (its vectors go at the next commit)."""
        self.removed_vids += [c.vid for c in self.by_source.pop(rel, [])]
        self.files.pop(rel, None)
        self.chunks.pop(rel, None)
        self.dirty = True

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def tell(self, path: str, stage: str) -> None:
        if self.progress is not None:
            done, total, files = self.in_flight
            moving = files * done / total if total else 0.0
            fraction = 1.0 if not self.files_total else min(1.0, (self.files_done + moving) / self.files_total)
            self.progress(IndexProgress(self.files_done, self.files_total, self.chunks_done, self.chunks_known,
                                        display_name(path), stage, round(fraction, 4)))

    # -- work -----------------------------------------------------------------------------
    def process(self, p: Path, rel: str, digest: str) -> None:
        self.tell(rel, "loading")
        try:
            chunks, pages = chunk_file(p, rel, self.cfg, self.next_vid)
        except SkipFile as e:
            self.skip(rel, digest, str(e))
            self.files_done += 1
            return
        self.next_vid += len(chunks)
        self.chunks_known += len(chunks)
        entry = {"sha256": digest, "chunks": len(chunks), "pages": pages, "size": p.stat().st_size}
        self.pending.append((rel, entry, chunks))
        if sum(len(c) for _, _, c in self.pending) >= self.block:
            self.flush()

    @property
    def block(self) -> int:
        return self.cfg.batch_size * 8

    def flush(self) -> None:
        """Embed every pending chunk (batch by batch, cancellable) and move finished files into the state."""
        if not self.pending:
            return
        todo = [c for _, _, cs in self.pending for c in cs]
        # Identical texts (licence paragraphs, boilerplate) are embedded once per run.
        unique: dict[str, int] = {}
        slot = [unique.setdefault(c.text, len(unique)) for c in todo]
        texts = list(unique)
        keys = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]
        need = [i for i, k in enumerate(keys) if k not in self.seen]
        vecs: np.ndarray | None = None
        if len(need) < len(texts):
            dim = len(next(self.seen[k] for k in keys if k in self.seen))
            vecs = np.empty((len(texts), dim), dtype=np.float32)
            for i, k in enumerate(keys):
                if k in self.seen:
                    vecs[i] = self.seen[k]
        done = 0
        for rows, batch in self.embedder.batches([texts[i] for i in need], self.cfg.batch_size):
            if vecs is None:
                vecs = np.empty((len(texts), batch.shape[1]), dtype=np.float32)
            at = [need[r] for r in rows]
            vecs[at] = batch
            for i, v in zip(at, batch):
                if len(self.seen) < SEEN_CAP:
                    self.seen[keys[i]] = v
            done += len(rows)
            self.chunks_done = self.chunks_known - len(todo) + round(len(todo) * done / len(need))
            self.in_flight = (done, len(need), len(self.pending))
            self.tell(self.pending[-1][0], "embedding")
            if self.cancelled() and done < len(need):
                self.chunks_known -= len(todo)
                self.chunks_done = self.chunks_known
                self.pending.clear()           # unfinished files: the next run does them
                self.in_flight = (0, 0, 0)
                return
        self.chunks_done = self.chunks_known
        self.in_flight = (0, 0, 0)
        if todo:
            self._store(int(vecs.shape[1])).add(np.array([c.vid for c in todo], dtype=np.int64), vecs[slot])
            self.report.embedded += len(todo)
        for rel, entry, chunks in self.pending:
            if rel in self.old_files:
                self.report.changed += 1
            else:
                self.report.added += 1
            self.drop_old(rel)
            self.skipped.pop(rel, None)
            self.files[rel], self.chunks[rel] = entry, chunks
            self.files_done += 1
        self.pending.clear()
        self.dirty = True

    def _store(self, dim: int | None = None) -> VectorStore:
        if self.store is None:
            self.dim = self.dim or dim or self.embedder.dim
            self.store = open_store(self.cfg, self.dim, None if self.full or self.old is None
                                    else self.index_dir / self.old.version)
            if self.full:
                self.store.reset()
        return self.store

    def maybe_commit(self) -> None:
        if self.dirty and time.monotonic() - self.last_commit >= self.cfg.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Write the current state as a complete new version and point CURRENT at it."""
        store = self._store()
        _checkpoint("vectors-added")
        removed = np.array(self.removed_vids, dtype=np.int64)
        if not store.shared:
            store.remove(removed)
        all_chunks = [c for rel in sorted(self.chunks) for c in self.chunks[rel]]
        version = _next_version(self.index_dir, self.version)
        tmp = self.index_dir / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        with atomic_write(tmp / "chunks.jsonl") as f:
            for c in all_chunks:
                f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
        _checkpoint("chunks-written")
        SparseIndex.build([c.tokens for c in all_chunks]).save(tmp / "bm25")
        store.save(tmp)
        _checkpoint("store-saved")
        write_json(tmp / "manifest.json", {
            "settings": self.settings, "dim": self.dim, "next_vid": self.next_vid, "chunks": len(all_chunks),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": dict(sorted(self.files.items())),
            "skipped": dict(sorted(self.skipped.items()))})
        _fsync_dir(tmp)
        os.replace(tmp, self.index_dir / version)
        _checkpoint("version-renamed")
        with atomic_write(self.index_dir / CURRENT) as f:
            f.write(version + "\n")
        _fsync_dir(self.index_dir)
        _checkpoint("committed")
        if store.shared:  # now no live version references them
            store.remove(removed)
        self.removed_vids = []
        _clean_leftovers(self.index_dir, version)
        self.version, self.dirty, self.last_commit = version, False, time.monotonic()
        self.report.version, self.report.chunks = version, len(all_chunks)
        log.debug("committed %s: %d files, %d chunks", version, len(self.files), len(all_chunks))


def build_index(cfg: RagConfig, embedder: Embedder, progress: Progress | None = None, *,
                only: Iterable[str] | None = None, cancel: threading.Event | None = None) -> IndexReport:
    """Bring the index in line with ``cfg.kb_dir``; only new/changed files are embedded.

    ``only``: paths relative to kb_dir; just these files are added, updated or (when gone) dropped,
    every other entry stays as it is. ``cancel``: set it to stop after the current embedding batch;
    the files finished so far are committed and ``report.cancelled`` is True.
    """
    t0 = time.perf_counter()
    kb_dir, index_dir = cfg.kb_dir, cfg.index_dir
    report = IndexReport()
    with _lock(index_dir):
        cfg = cfg.resolved(recorded_settings(index_dir))
        run = _Run(cfg, embedder, progress, cancel, report)
        _clean_leftovers(index_dir, run.version)
        if only is None:
            found = scan(kb_dir, index_dir, cfg.ocr)
            candidates = found.files
            report.skipped += found.skipped
            report.ignored += found.ignored
        else:
            candidates, wanted = [], sorted(set(only))
            for rel in run.old_files:        # everything else stays as it is
                if rel not in wanted:
                    run.keep_old(rel)
            run.skipped.update({r: s for r, s in run.old_skipped.items() if r not in wanted})
            for rel in wanted:
                p = kb_dir / rel
                if not p.is_file() and not p.is_symlink():
                    if rel in run.old_files or rel in run.old_skipped:
                        run.drop_old(rel)
                        run.skipped.pop(rel, None)
                        report.deleted += 1
                    continue
                verdict = classify(p, kb_dir, cfg.ocr)
                if verdict is None:
                    candidates.append(p)
                else:
                    getattr(report, verdict[0]).append((rel, verdict[1]))
        todo = []
        for p in candidates:
            rel = p.relative_to(kb_dir).as_posix()
            try:
                size = p.stat().st_size
                if size > cfg.max_file_bytes:
                    run.skip(rel, None, f"{_size_text(size)} is over the {cfg.max_file_mb:g} MB limit per file "
                                        "(raise it with --max-file-mb)")
                    continue
                digest = sha256_file(p)
            except OSError as e:
                report.skipped.append((rel, f"cannot read file ({e.strerror or e})"))
                continue
            if rel in run.old_files and run.old_files[rel]["sha256"] == digest:
                run.keep_old(rel)
                report.unchanged += 1
            elif rel in run.old_skipped and run.old_skipped[rel]["sha256"] == digest \
                    and run.old_skipped[rel].get("ocr", False) == cfg.ocr:   # turning OCR on retries
                run.keep_old_skip(rel)
            else:
                if rel in run.old_files:      # searchable as it was until its new version is in
                    run.keep_old(rel)
                todo.append((p, rel, digest))
        if only is None:
            seen = {p.relative_to(kb_dir).as_posix() for p in candidates}
            deleted = [rel for rel in run.old_files if rel not in seen]
            for rel in deleted:
                run.drop_old(rel)
            report.deleted = len(deleted)
            gone = [rel for rel in run.old_skipped if rel not in seen]
            run.dirty = bool(deleted or gone or set(run.skipped) != set(run.old_skipped))
        run.dirty = run.dirty or run.full

        run.files_total = len(todo)
        for p, rel, digest in todo:
            if run.cancelled():
                break
            run.process(p, rel, digest)
            if not run.pending:
                run.maybe_commit()
        if not run.cancelled():
            run.flush()
        report.cancelled = run.cancelled()
        run.tell("", "done")
        if run.dirty or run.removed_vids:
            run.commit()
        else:
            report.version = run.version
            report.chunks = sum(len(c) for c in run.chunks.values())
        report.seconds = time.perf_counter() - t0
        return report


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
