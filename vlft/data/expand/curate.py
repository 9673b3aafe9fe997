"""Curation: keep a pair only if it is the right length and language, supported by its source text
(generated pairs), and not an exact or near duplicate of a pair already kept. Counts per filter."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

FILTERS = ("length", "language", "support", "duplicate", "near_duplicate")   # + "judge" with --judge


@dataclass
class Pair:
    """One training sample before it is written: a question/answer, optionally about an image."""

    kind: str                       # "caption" (image -> caption), "vqa" (image + question), "qa" (text only)
    question: str
    answer: str
    source: str                     # file path or URL
    ref: str                        # chunk or figure id within the source
    generator: str = "document"     # "document" for captions the document gave, else the generator's name
    lang: str = "en"
    image: str | None = None        # absolute path of the saved figure
    page: int | None = None
    support_text: str = ""          # what the answer must be supported by (chunk, caption + context)
    scores: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        import hashlib
        key = "\x1f".join([self.kind, norm(self.question), norm(self.answer), self.image or ""])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("kind", "question", "answer", "source", "ref", "generator", "lang",
                                              "image", "page", "support_text", "scores")}

    @classmethod
    def from_dict(cls, d: dict) -> "Pair":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class CurateConfig:
    min_support: float = 0.5        # share of the answer's content words found in its source text
    near_duplicate: float = 0.85    # Jaccard similarity of character 3-grams at or above which pairs are duplicates
    # Lengths in Latin-character units (a CJK character counts 2).
    min_answer_chars: int = 2
    max_answer_chars: int = 1500
    min_question_chars: int = 4
    min_caption_chars: int = 8      # document captions and alt texts shorter than this ("logo", "图标") are dropped


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def language_of(text: str) -> str:
    from multi_agent.rag.tokenize import cjk_ratio
    return "zh" if cjk_ratio(text) >= 0.3 else "en"


def support(answer: str, source: str) -> float:
    """Share of the answer's content words (jieba for Chinese, stopwords dropped) present in the source."""
    from multi_agent.rag.tokenize import tokenize

    toks = tokenize(answer)
    if not toks:
        return 0.0
    src = set(tokenize(source))
    src_text = source.lower()
    return sum(t in src or t in src_text for t in toks) / len(toks)


def _shingles(text: str) -> set[str]:
    t = norm(text).replace(" ", "")
    return {t[i:i + 3] for i in range(max(1, len(t) - 2))}


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def size(text: str) -> int:
    """Length in Latin-character units: a CJK character carries about two letters' worth of meaning."""
    text = text.strip()
    return len(text) + len(_CJK.findall(text))


def _check_length(p: Pair, cfg: CurateConfig) -> bool:
    n = size(p.answer)
    if p.kind == "caption":
        return cfg.min_caption_chars <= n <= cfg.max_answer_chars
    return cfg.min_answer_chars <= n <= cfg.max_answer_chars and size(p.question) >= cfg.min_question_chars


def curate(pairs: list[Pair], cfg: CurateConfig | None = None, seen: list[Pair] | None = None
           ) -> tuple[list[Pair], Counter]:
    """(kept, removed per filter). ``seen``: pairs kept earlier (duplicates of them are removed too)."""
    cfg = cfg or CurateConfig()
    removed: Counter = Counter({f: 0 for f in FILTERS})
    kept: list[Pair] = []
    exact: set[str] = set()
    shingles: list[tuple[str | None, set[str]]] = []
    for p in seen or []:
        exact.add(p.id)
        shingles.append((p.image, _shingles(p.question + " " + p.answer)))
    for p in pairs:
        generated = p.generator != "document"
        if not _check_length(p, cfg):
            removed["length"] += 1
            continue
        if generated and language_of(p.answer) != p.lang:
            removed["language"] += 1
            continue
        if generated and p.kind != "caption":
            p.scores["support"] = round(support(p.answer, p.support_text), 3)
            if p.scores["support"] < cfg.min_support:
                removed["support"] += 1
                continue
        if p.id in exact:
            removed["duplicate"] += 1
            continue
        sh = _shingles(p.question + " " + p.answer)
        if any(img == p.image and len(sh & s) / max(1, len(sh | s)) >= cfg.near_duplicate for img, s in shingles):
            removed["near_duplicate"] += 1
            continue
        exact.add(p.id)
        shingles.append((p.image, sh))
        kept.append(p)
    return kept, removed
