"""Outputs and the one step into use: captions.csv, train.json (messages), provenance.jsonl; appending
to an existing training file (deduplicated, atomic); putting the sources into the knowledge base."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from vlft.utils.io import atomic_write, write_json, write_jsonl

from .curate import Pair, norm
from .extract import Extracted


def record(p: Pair, base: Path) -> dict:
    """A messages-format training record; image paths relative to ``base`` (the JSON's folder)."""
    user = [{"type": "text", "text": p.question}]
    if p.image:
        user.insert(0, {"type": "image", "image": os.path.relpath(p.image, base)})
    return {"id": p.id, "messages": [{"role": "user", "content": user},
                                     {"role": "assistant", "content": [{"type": "text", "text": p.answer}]}]}


def provenance(p: Pair) -> dict:
    return {"id": p.id, "kind": p.kind, "source": p.source, "page": p.page, "ref": p.ref,
            "generator": p.generator, "image": p.image, "scores": p.scores}


def write_outputs(out: Path, pairs: list[Pair]) -> dict[str, Path]:
    """captions.csv (document or generated captions), train.json and provenance.jsonl in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"captions": out / "captions.csv", "train": out / "train.json", "provenance": out / "provenance.jsonl"}
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["image_path", "caption"])
    for p in pairs:
        if p.kind == "caption":
            w.writerow([os.path.relpath(p.image, out), p.answer])
    with atomic_write(paths["captions"], newline="") as f:
        f.write(buf.getvalue())
    write_json(paths["train"], [record(p, out) for p in pairs], indent=1)
    write_jsonl(paths["provenance"], (provenance(p) for p in pairs))
    return paths


def _sample_key(sample: dict) -> tuple:
    """Normalized texts and absolute image paths of a loaded sample: what makes two samples the same."""
    return tuple((m["role"], tuple(norm(c["text"]) if c["type"] == "text" else os.path.realpath(c["image"])
                                   for c in m["content"])) for m in sample["messages"])


def append_to_train(train_json: Path, pairs: list[Pair]) -> tuple[int, int]:
    """Append ``pairs`` to ``train_json`` (created if absent; JSON list or JSONL kept as it is), leaving out
    samples it already holds. Returns (added, already there). The file is replaced atomically."""
    from vlft.data.dataset import DataError, _iter_records, load_samples, normalize_record

    train_json = Path(train_json)
    base = train_json.parent.resolve()
    raw: list = []
    have: set = set()
    if train_json.is_file() and train_json.stat().st_size:
        raw = [r for _, r in _iter_records(train_json) if not isinstance(r, Exception)]
        have = {_sample_key(s) for s in load_samples(train_json, check_images=False)}
    added = 0
    for p in pairs:
        rec = record(p, base)
        try:
            key = _sample_key(normalize_record(rec, base, check_images=False))
        except Exception as e:  # our own records always normalize; a failure is a bug worth a line
            raise DataError(f"{train_json}: cannot add sample {p.id}: {e}") from None
        if key in have:
            continue
        have.add(key)
        raw.append(rec)
        added += 1
    if train_json.suffix.lower() == ".jsonl":
        write_jsonl(train_json, raw)
    else:
        write_json(train_json, raw, indent=1)
    return added, len(pairs) - added


# -- knowledge base --------------------------------------------------------------------------------------
KB_SUBDIR = "expanded"
KB_NATIVE = (".pdf", ".txt", ".md", ".mdx")   # the knowledge base's loaders read these as they are


def as_markdown(ex: Extracted) -> str:
    parts = [f"# {ex.title}\n"] if ex.title else []
    if ex.doc.url:
        parts.append(f"Source: {ex.doc.url}\n")
    for s in ex.sections:
        if s.heading and s.heading != ex.title:
            parts.append(f"## {s.heading}\n")
        parts.append(s.text.strip() + "\n")
    return "\n".join(parts)


def kb_file_name(ex: Extracted, key: str) -> str:
    """One stable name per source, so a changed source replaces its earlier copy in the knowledge base."""
    stem = ex.doc.path.stem[:60]
    suffix = ex.doc.suffix if ex.doc.suffix in KB_NATIVE else ".md"
    return f"{stem}-{key[:8]}{suffix}"


def put_in_kb(kb_dir: Path, ex: Extracted, key: str) -> Path:
    """Copy (PDF/TXT/MD) or convert (HTML/DOCX -> Markdown) one source into ``kb_dir/expanded``."""
    dest = Path(kb_dir) / KB_SUBDIR / kb_file_name(ex, key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if ex.doc.suffix in KB_NATIVE:
        with atomic_write(dest, "wb") as f, open(ex.doc.path, "rb") as src:
            shutil.copyfileobj(src, f)
    else:
        with atomic_write(dest) as f:
            f.write(as_markdown(ex))
    return dest


def index_kb(kb_dir: Path, progress: Callable[[int, int, str], None] | None = None, **rag_overrides):
    """Incremental indexing through the knowledge base's own API; returns its IndexReport."""
    from multi_agent.rag import KnowledgeBase, RagConfig

    kb = KnowledgeBase(RagConfig(kb_dir=Path(kb_dir), **rag_overrides))
    return kb.index(progress)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
