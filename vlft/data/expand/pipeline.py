"""The expansion pipeline: sources -> extraction -> generation -> curation -> outputs (-> train / KB).

``Expander`` is the plain class the CLI, the desktop app and tests drive: ``collect()`` does the work
and returns the candidate pairs (nothing final written yet), ``save(result, accepted)`` writes the
outputs and puts them into use; ``run()`` is both. Progress goes to one callback
``progress(phase, done, total, note)``. A sync state in the output folder remembers each source's hash
(files) or ETag/Last-Modified (URLs), so a re-run skips unchanged sources and keeps their samples.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Literal

from vlft.config import BaseConfig, field, require
from vlft.utils.io import sha256_file, write_json, write_jsonl

from . import export
from .curate import CurateConfig, Pair, curate, language_of
from .extract import ExtractConfig, Extracted, Figure, extract, image_name
from .generate import (CAPTION_QUESTION, GenerationCache, Generator, Prompt, generate_cached, make_generator,
                       parse_pairs, parse_verdict, render)
from .sources import (IMAGE_TYPES, Document, FetchConfig, Fetcher, SourceError, expand_sources, fetch_document,
                      is_url, load_state, local_document, site_links)

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, int, int, str], None]
STATE_FILE = "sync_state.json"
SAMPLES_FILE = "samples.jsonl"        # every kept pair with its source: what a re-sync keeps for unchanged sources
CACHE_FILE = ".cache/generations.jsonl"
MIN_CHUNK_CHARS = 40                  # shorter chunks (a page number, a heading alone) give no question


@dataclass
class ExpandConfig(BaseConfig):
    """Turn documents and web pages into image-caption / Q&A training data and knowledge-base entries."""

    source: list[str] = field(default_factory=list, doc="file, folder, http(s) URL, or a .txt/.list file "
                              "listing them (repeatable); PDF, HTML, Markdown, TXT, DOCX")
    output: Path = field(Path("output/expand"), "output folder: captions.csv, train.json, provenance.jsonl, "
                         "images/, the sync state and the generation cache")
    generator: str = field("none", "none (document captions only), local (a Qwen-VL: --model), or the URL "
                           "of an OpenAI-compatible endpoint (http://localhost:8000/v1)")
    model: str | None = field(None, "local: the Qwen-VL folder; URL: the served model name (default: the first listed)")
    adapter: str | None = field(None, "local: a LoRA/MoE-LoRA adapter folder on top of --model")
    to: Literal["none", "train", "kb", "both"] = field("none", "also append to --train_json (train), put the "
                                                       "sources into --kb_dir and index them (kb), or both")
    train_json: Path | None = field(None, "training file to append new samples to (created if absent)")
    kb_dir: Path | None = field(None, "knowledge-base folder; sources go to <kb_dir>/expanded/")
    crawl_depth: int = field(0, "follow same-site links of fetched pages this many levels deep (0 = no crawling)")
    max_pages: int = field(50, "at most this many pages fetched per start URL")
    rate_limit: float = field(1.0, "seconds between two requests to the same host")
    timeout: float = field(20.0, "seconds per HTTP request")
    max_mb: float = field(50.0, "refuse downloads larger than this many MiB")
    min_image_side: int = field(64, "drop figures whose shorter side is below this many pixels (icons, logos)")
    chunk_size: int = field(1200, "characters of text per generation chunk")
    chunk_overlap: int = field(100, "characters repeated between consecutive chunks")
    qa_per_chunk: int = field(2, "question-answer pairs asked for per text chunk (and per captioned figure)")
    max_chunks: int | None = field(None, "generate from at most this many text chunks per run (default: all)")
    batch_size: int = field(8, "local generator: prompts per forward pass")
    concurrency: int = field(4, "URL generator: requests in flight")
    max_new_tokens: int = field(256, "tokens generated per prompt")
    min_support: float = field(0.5, "keep a generated answer only if this share of its content words is in "
                               "its source chunk")
    judge: bool = field(False, "also ask the generator whether each generated answer is supported by its "
                        "source and drop the ones it says no to (one more prompt per pair, cached)")
    near_duplicate: float = field(0.85, "character 3-gram Jaccard similarity at or above which two pairs are "
                                  "near duplicates")
    verbose: bool = field(False, "more log output")

    def validate(self) -> None:
        super().validate()
        require(bool(self.source), "source", "name at least one file, folder, URL or list file")
        require(self.to not in ("train", "both") or self.train_json is not None, "train_json",
                "--to train needs --train_json FILE")
        require(self.to not in ("kb", "both") or self.kb_dir is not None, "kb_dir", "--to kb needs --kb_dir DIR")
        require(self.generator in ("none", "local") or self.generator.startswith(("http://", "https://")),
                "generator", f"{self.generator!r} is not none, local or an http(s):// URL")
        require(self.generator != "local" or bool(self.model), "model", "--generator local needs --model")
        require(self.crawl_depth >= 0 and self.max_pages >= 1, "crawl_depth", "must be >= 0 (and max_pages >= 1)")
        require(self.rate_limit >= 0 and self.timeout > 0 and self.max_mb > 0, "rate_limit",
                "rate_limit >= 0, timeout > 0 and max_mb > 0 required")
        require(100 <= self.chunk_size and 0 <= self.chunk_overlap < self.chunk_size // 2, "chunk_size",
                "chunk_size >= 100 and 0 <= chunk_overlap < chunk_size/2")
        require(self.qa_per_chunk >= 1 and self.batch_size >= 1 and self.concurrency >= 1, "qa_per_chunk",
                "qa_per_chunk, batch_size and concurrency must be >= 1")
        require(0 <= self.min_support <= 1 and 0 < self.near_duplicate <= 1, "min_support",
                "min_support in [0, 1], near_duplicate in (0, 1]")


@dataclass
class ExpandResult:
    """What ``collect`` found: candidate pairs (new, and kept from unchanged sources) plus counts."""

    pairs: list[Pair] = dc_field(default_factory=list)
    extracted: list[tuple[str, Extracted]] = dc_field(default_factory=list)   # (source key, extraction)
    state: dict = dc_field(default_factory=dict)
    documents: int = 0
    unchanged: int = 0
    pages: int = 0
    figures: int = 0
    captioned: int = 0
    dropped_images: Counter = dc_field(default_factory=Counter)
    skipped: list[tuple[str, str]] = dc_field(default_factory=list)
    removed: Counter = dc_field(default_factory=Counter)
    generated: int = 0
    cached: int = 0
    failed: int = 0
    unparsed: int = 0               # outputs with no "Q: ... A: ..." pair in them
    seconds: dict[str, float] = dc_field(default_factory=dict)


@dataclass
class ExpandReport:
    result: ExpandResult
    written: int = 0
    outputs: dict[str, Path] = dc_field(default_factory=dict)
    appended: tuple[int, int] | None = None
    kb: object | None = None

    def summary(self) -> str:
        r = self.result
        kinds = Counter(p.kind for p in r.pairs)
        lines = [f"sources: {r.documents} read, {r.unchanged} unchanged, {len(r.skipped)} skipped; "
                 f"{r.pages} pages, {r.figures} figures ({r.captioned} with a document caption)"]
        t = r.seconds.get("extract", 0.0)
        if r.pages and t > 0:
            lines.append(f"extraction: {r.pages} pages in {t:.1f} s ({r.pages / t:.1f} pages/s)")
        if r.dropped_images:
            lines.append("images dropped: " + ", ".join(f"{k}: {v}" for k, v in sorted(r.dropped_images.items())))
        if r.generated or r.cached or r.failed:
            lines.append(f"generation: {r.generated} prompts run, {r.cached} from the cache, {r.failed} failed, "
                         f"{r.unparsed} gave no Q&A pair")
        lines.append("removed: " + ", ".join(f"{k}: {v}" for k, v in r.removed.items()))
        lines.append(f"samples: {self.written} ({kinds.get('caption', 0)} image-caption, {kinds.get('vqa', 0)} VQA, "
                     f"{kinds.get('qa', 0)} text Q&A) -> {self.outputs.get('train', '')}")
        if self.appended is not None:
            lines.append(f"training file: {self.appended[0]} added, {self.appended[1]} already there")
        if self.kb is not None:
            lines.append(f"knowledge base: {self.kb.summary()}")
        return "\n".join(lines)


def _key(origin: str) -> str:
    return hashlib.sha256(origin.encode()).hexdigest()[:16]


class Expander:
    """Drive the pipeline; the GUI passes ``progress`` and may cancel with ``cancel()``."""

    def __init__(self, cfg: ExpandConfig, generator: Generator | None = None, progress: ProgressFn | None = None,
                 fetcher: Fetcher | None = None):
        self.cfg = cfg
        self.out = Path(cfg.output)
        self._gen = generator
        self._gen_made = generator is not None
        self.progress = progress or (lambda phase, done, total, note: None)
        self.fetcher = fetcher or Fetcher(FetchConfig(timeout=cfg.timeout, max_bytes=int(cfg.max_mb * (1 << 20)),
                                                      delay=cfg.rate_limit))
        self.extract_cfg = ExtractConfig(min_image_side=cfg.min_image_side)
        self.curate_cfg = CurateConfig(min_support=cfg.min_support, near_duplicate=cfg.near_duplicate)
        self._cancelled = False
        if cfg.judge and generator is None and cfg.generator == "none":
            raise ValueError("judge: --judge needs a generator (--generator local or a URL)")

    @property
    def generator(self) -> Generator | None:
        if not self._gen_made:
            self._gen = make_generator(self.cfg.generator, self.cfg.model, self.cfg.adapter, self.cfg.batch_size,
                                       self.cfg.concurrency, self.cfg.max_new_tokens)
            self._gen_made = True
        return self._gen

    @property
    def generator_name(self) -> str:
        """What made this run's pairs ("none" for document captions only): part of each source's sync state."""
        gen = self.generator
        return "none" if gen is None else gen.name

    def cancel(self) -> None:
        self._cancelled = True

    # -- phase 1: sources + extraction ------------------------------------------------------------
    def _documents(self, res: ExpandResult, old: dict) -> list[tuple[Document, Extracted | None]]:
        entries = list(expand_sources(self.cfg.source))
        docs: list[tuple[Document, Extracted | None]] = []
        done = 0
        for origin, root in entries:
            if self._cancelled:
                break
            if is_url(origin):
                docs += self._crawl(origin, res, old)
            else:
                try:
                    doc = local_document(origin, root)
                    docs.append((doc, self._extract_local(doc, res, old)))
                except SourceError as e:
                    res.skipped.append((origin, str(e)))
            done += 1
            self.progress("sources", done, len(entries), origin)
        return docs

    def _stale(self, prev: dict) -> bool:
        """An unchanged source still needs extracting when last time used another generator, or when
        this run puts sources into a knowledge base that lacks its copy."""
        if prev.get("generator") != self.generator_name:
            return True
        if self.cfg.to in ("kb", "both"):
            kb_file = Path(prev.get("kb_file") or "")
            return not (kb_file.is_file() and kb_file.parent == Path(self.cfg.kb_dir) / export.KB_SUBDIR)
        return False

    def _extract_local(self, doc: Document, res: ExpandResult, old: dict) -> Extracted | None:
        digest = sha256_file(doc.path)
        prev = old.get(_key(doc.origin), {})
        state = {"origin": doc.origin, "sha256": digest, "generator": self.generator_name}
        if prev.get("sha256") == digest and not self._stale(prev):
            doc.unchanged = True
            ex = None
        else:
            ex = extract(doc, cfg=self.extract_cfg)   # raises SourceError: no state, retried next run
        res.state[_key(doc.origin)] = state
        return ex

    def _crawl(self, start: str, res: ExpandResult, old: dict) -> list[tuple[Document, Extracted | None]]:
        out: list[tuple[Document, Extracted | None]] = []
        queue, seen = deque([(start, 0)]), {start}
        tried = 0
        while queue and tried < self.cfg.max_pages and not self._cancelled:
            url, depth = queue.popleft()
            tried += 1
            prev = old.get(_key(url), {})
            if self._stale(prev):
                prev = {}      # fetch and extract again: what this run needs was not made last time
            try:
                doc = fetch_document(self.fetcher, url, self.out / "downloads", prev)
                ex = None
                if doc.unchanged:
                    doc.links = prev.get("links", [])
                else:
                    ex = extract(doc, self._remote_assets(doc), self.extract_cfg)
            except SourceError as e:
                res.skipped.append((url, str(e)))
                continue
            res.state[_key(url)] = {"origin": url, "etag": doc.etag, "last_modified": doc.last_modified,
                                    "path": str(doc.path), "links": doc.links, "generator": self.generator_name}
            out.append((doc, ex))
            self.progress("fetch", tried, min(self.cfg.max_pages, tried + len(queue)), url)
            if depth < self.cfg.crawl_depth:
                for link in site_links(doc, start):
                    if link not in seen:
                        seen.add(link)
                        queue.append((link, depth + 1))
        return out

    def _remote_assets(self, doc: Document):
        import urllib.parse

        from .extract import _data_url

        def load(src: str) -> bytes:
            if src.startswith("data:"):
                return _data_url(src)
            url = urllib.parse.urljoin(doc.url or doc.origin, src)
            if not is_url(url):
                raise SourceError(f"{src}: not an http(s) image")
            r = self.fetcher.get(url, accept=IMAGE_TYPES)
            return r.data
        return load

    # -- phase 2: pairs -------------------------------------------------------------------------------
    def _save_figure(self, key: str, fig: Figure) -> str:
        from PIL import Image

        path = self.out / "images" / image_name(key, fig)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            data = fig.image
            if not data.startswith((b"\xff\xd8\xff", b"\x89PNG")):   # GIF/WebP/BMP -> PNG
                buf = io.BytesIO()
                with Image.open(io.BytesIO(data)) as im:
                    im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB").save(buf, format="PNG")
                data = buf.getvalue()
            from vlft.utils.io import atomic_write
            with atomic_write(path, "wb") as f:
                f.write(data)
        return str(path.resolve())

    def _pairs_for(self, key: str, ex: Extracted, res: ExpandResult, prompts: list[tuple[Prompt, dict]]) -> list[Pair]:
        """Document-caption pairs now; prompts for the generator (with what each answer becomes) queued."""
        pairs: list[Pair] = []
        for fig in ex.figures:
            pairs += self._figure(key, fig, ex, res, prompts)
        if self.generator is not None:
            prompts += self._chunk_prompts(ex)
        return pairs

    def _figure(self, key: str, fig: Figure, ex: Extracted, res: ExpandResult,
                prompts: list[tuple[Prompt, dict]]) -> list[Pair]:
        img = self._save_figure(key, fig)
        res.figures += 1
        # A bilingual report: each piece is asked about (and checked) in its own language.
        lang = language_of(fig.caption or fig.context or ex.text)
        meta = dict(source=ex.doc.origin, ref=fig.figure_id, lang=lang, image=img, page=fig.page)
        image_key = hashlib.sha256(fig.image).hexdigest()
        out = []
        if fig.caption:
            res.captioned += 1
            out.append(Pair("caption", CAPTION_QUESTION[lang], fig.caption, generator="document",
                            support_text=fig.caption, scores={"caption_kind": fig.caption_kind}, **meta))
        if self.generator is None:
            return out
        if fig.caption:       # questions the document's caption answers
            p = Prompt(render("vqa", lang, caption=fig.caption, n=self.cfg.qa_per_chunk), img, image_key)
            prompts.append((p, dict(kind="vqa", support_text=fig.caption + "\n" + fig.context, **meta)))
        else:                 # a caption from the picture and the text around it
            p = Prompt(render("caption", lang, text=fig.context[:600] or "-"), img, image_key)
            prompts.append((p, dict(kind="caption", support_text=fig.context, **meta)))
        return out

    def _chunk_prompts(self, ex: Extracted) -> list[tuple[Prompt, dict]]:
        """One Q&A prompt per text chunk (the knowledge base's sentence-aligned chunker), heading included."""
        from multi_agent.rag.chunking import chunk_text

        out = []
        for si, sec in enumerate(ex.sections):
            for span in chunk_text(sec.text, self.cfg.chunk_size, self.cfg.chunk_overlap):
                text = sec.text[span.start:span.end]
                if len(text.strip()) < MIN_CHUNK_CHARS:
                    continue
                body = f"{sec.heading}\n{text}" if sec.heading else text
                lang = language_of(body)
                p = Prompt(render("qa", lang, text=body, n=self.cfg.qa_per_chunk), None,
                           hashlib.sha256(body.encode()).hexdigest())
                out.append((p, dict(kind="qa", source=ex.doc.origin, ref=f"s{si}:{span.start}-{span.end}",
                                    lang=lang, image=None, page=sec.page, support_text=body)))
        return out

    def _generate(self, prompts: list[tuple[Prompt, dict]], res: ExpandResult) -> list[Pair]:
        gen = self.generator
        if gen is None or not prompts:
            return []
        if self.cfg.max_chunks is not None:
            qa = [x for x in prompts if x[1]["kind"] == "qa"][: self.cfg.max_chunks]
            prompts = [x for x in prompts if x[1]["kind"] != "qa"] + qa
        cache = GenerationCache(self.out / CACHE_FILE)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            self.progress("generate", done, len(prompts), "")
        outputs, cached = generate_cached(gen, [p for p, _ in prompts], cache, progress=tick)
        res.cached += cached
        res.generated += len(prompts) - cached
        pairs = []
        for (p, meta), text in zip(prompts, outputs):
            if text is None:
                res.failed += 1
                continue
            if meta["kind"] == "caption":
                cap = " ".join(text.split())
                pairs.append(Pair(question=CAPTION_QUESTION[meta["lang"]], answer=cap, generator=gen.name, **meta))
                continue
            found = parse_pairs(text)
            res.unparsed += not found
            pairs += [Pair(question=q, answer=a, generator=gen.name, **meta) for q, a in found]
        return pairs

    # -- public --------------------------------------------------------------------------------------------
    def collect(self) -> ExpandResult:
        """Read every source, make and curate the pairs. Writes only images, downloads and the cache."""
        res = ExpandResult()
        old = load_state(self.out / STATE_FILE)
        t0 = time.perf_counter()
        docs = self._documents(res, old)
        res.seconds["extract"] = time.perf_counter() - t0
        kept_before = {}
        for row in export.read_jsonl(self.out / SAMPLES_FILE):
            kept_before.setdefault(row.get("source"), []).append(Pair.from_dict(row))
        candidates: list[Pair] = []
        prompts: list[tuple[Prompt, dict]] = []
        for doc, ex in docs:
            key = _key(doc.origin)
            if ex is None:      # unchanged since the last sync: keep its earlier samples
                res.unchanged += 1
                candidates += kept_before.get(doc.origin, [])
                res.state[key].update({k: v for k, v in old.get(key, {}).items() if k in ("kb_file",)})
                continue
            res.documents += 1
            res.pages += ex.pages
            res.dropped_images.update(ex.dropped)
            candidates += self._pairs_for(key, ex, res, prompts)
            ex.figures = []     # saved to images/ by now: only the text is kept (for the knowledge base)
            res.extracted.append((key, ex))
        t1 = time.perf_counter()
        candidates += self._generate(prompts, res)
        res.seconds["generate"] = time.perf_counter() - t1
        self.progress("curate", 0, len(candidates), "")
        res.pairs, res.removed = curate(candidates, self.curate_cfg)
        self.progress("curate", len(candidates), len(candidates), "")
        if self.cfg.judge:
            res.pairs = self._judge(res.pairs, res)
        return res

    def _judge(self, pairs: list[Pair], res: ExpandResult) -> list[Pair]:
        """Ask the generator whether each generated Q&A is supported by its source; drop the "no"s.
        Document captions and generated captions (nothing to check them against) pass."""
        gen = self.generator
        todo = [i for i, p in enumerate(pairs) if gen is not None and p.generator == gen.name and p.kind != "caption"]
        res.removed["judge"] = 0
        if not todo:
            return pairs
        prompts = [Prompt(render("judge", pairs[i].lang, text=pairs[i].support_text[:3000], question=pairs[i].question,
                                 answer=pairs[i].answer), None, pairs[i].id) for i in todo]
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            self.progress("judge", done, len(prompts), "")
        outputs, cached = generate_cached(gen, prompts, GenerationCache(self.out / CACHE_FILE), progress=tick)
        res.generated += len(prompts) - cached
        res.cached += cached
        drop = set()
        for i, out in zip(todo, outputs):
            verdict = parse_verdict(out)
            pairs[i].scores["judge"] = verdict
            if verdict is False:
                drop.add(i)
        res.removed["judge"] = len(drop)
        return [p for i, p in enumerate(pairs) if i not in drop]

    def save(self, res: ExpandResult, accepted: list[Pair] | None = None) -> ExpandReport:
        """Write the outputs for ``accepted`` (default: all pairs) and put them into use (``--to``)."""
        pairs = res.pairs if accepted is None else accepted
        rep = ExpandReport(res, written=len(pairs))
        self.progress("write", 0, 1, "")
        rep.outputs = export.write_outputs(self.out, pairs)
        write_jsonl(self.out / SAMPLES_FILE, (p.to_dict() for p in pairs))
        if self.cfg.to in ("train", "both"):
            rep.appended = export.append_to_train(Path(self.cfg.train_json), pairs)
        if self.cfg.to in ("kb", "both"):
            for i, (key, ex) in enumerate(res.extracted):
                res.state[key]["kb_file"] = str(export.put_in_kb(Path(self.cfg.kb_dir), ex, key))
                self.progress("kb", i + 1, len(res.extracted), ex.doc.origin)
            rep.kb = export.index_kb(Path(self.cfg.kb_dir),
                                     lambda r: self.progress("index", r.files_done, r.files_total, r.path))
        write_json(self.out / STATE_FILE, res.state)
        self.progress("write", 1, 1, "")
        return rep

    def run(self) -> ExpandReport:
        return self.save(self.collect())


def run_expand(cfg: ExpandConfig, progress: ProgressFn | None = None) -> ExpandReport:
    """The stage: ``expand_data.py``'s one library call (tqdm bars per phase unless a callback is given)."""
    bars = _TqdmProgress() if progress is None else None
    try:
        rep = Expander(cfg, progress=progress or bars).run()
    finally:
        if bars is not None:
            bars.close()
    for origin, reason in rep.result.skipped:
        print(f"skipped {origin}: {reason}")
    return rep


class _TqdmProgress:
    """One tqdm bar per phase, replaced when the phase changes."""

    def __init__(self):
        self.phase, self.bar = None, None

    def __call__(self, phase: str, done: int, total: int, note: str) -> None:
        from tqdm import tqdm

        if phase != self.phase:
            self.close()
            self.phase, self.bar = phase, tqdm(total=total or None, desc=phase, leave=False, unit="item",
                                                 disable=None)   # no bars when stderr is not a terminal
        if self.bar.disable:
            return
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        if note:
            self.bar.set_postfix_str(note[-40:], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None
