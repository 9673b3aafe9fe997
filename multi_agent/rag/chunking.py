"""Sentence-aware chunking with overlap, for Chinese (。！？) and English (. ! ? + space).

Each chunk is an exact slice ``text[start:end]`` of its page, so offsets point back into
the source; consecutive chunks share whole trailing sentences up to ``overlap`` chars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends after CJK terminators, after . ! ? ; followed by whitespace, or at a blank line.
# Closing quotes/brackets stay with their sentence.
_SENT_END = re.compile(
    r"[。！？；!?]+[”’」』）)\"']*"
    r"|[.;](?=[”’\"')\]]*\s)[”’\"')\]]*"
    r"|\n\s*\n"
    r"|\n(?=\s*(?:[-*+#>|]|\d+[.)]))"  # markdown list items / headings / tables
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def sentence_spans(text: str) -> list[Span]:
    """Split into sentences; spans cover the text with whitespace trimmed at both ends."""
    spans, pos = [], 0
    for m in _SENT_END.finditer(text):
        if m.end() > pos:
            spans.append(Span(pos, m.end()))
            pos = m.end()
    if pos < len(text):
        spans.append(Span(pos, len(text)))
    out = []
    for s in spans:
        a, b = s.start, s.end
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append(Span(a, b))
    return out


def _split_long(text: str, span: Span, size: int, overlap: int) -> list[Span]:
    """Hard-split one over-long sentence into windows, preferring to cut at whitespace."""
    out, a = [], span.start
    while a < span.end:
        b = min(a + size, span.end)
        if b < span.end:
            cut = text.rfind(" ", a + size // 2, b)
            if cut > a:
                b = cut
        out.append(Span(a, b))
        if b >= span.end:
            break
        a = max(b - overlap, a + 1)
        while a < b and text[a].isspace():
            a += 1
    return out


def chunk_text(text: str, size: int = 500, overlap: int = 80) -> list[Span]:
    """Greedy-pack sentences into chunks of <= ``size`` chars (one over-long sentence is split)."""
    sents: list[Span] = []
    for s in sentence_spans(text):
        sents += _split_long(text, s, size, overlap) if s.end - s.start > size else [s]
    chunks: list[Span] = []
    i = 0
    while i < len(sents):
        j = i + 1
        while j < len(sents) and sents[j].end - sents[i].start <= size:
            j += 1
        chunks.append(Span(sents[i].start, sents[j - 1].end))
        if j >= len(sents):
            break
        # Next chunk restarts at the trailing sentences that fit in the overlap budget,
        # always moving forward by at least one sentence.
        k = j
        while k - 1 > i and sents[j - 1].end - sents[k - 1].start <= overlap:
            k -= 1
        i = k
    return chunks
