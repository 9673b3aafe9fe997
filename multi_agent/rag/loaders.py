"""File loaders: text in any common encoding (detected, not guessed) and PDFs page by page.

A loader returns a :class:`LoadedDoc` (pages of text) or raises :class:`SkipFile` whose
message is the one-line reason shown to the user; one bad file never stops the others.
"""

from __future__ import annotations

import codecs
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import PDF_SUFFIXES, TEXT_SUFFIXES

# (byte order mark, codec) longest first: UTF-32 LE's BOM starts with UTF-16 LE's.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")


class SkipFile(Exception):
    """This file cannot be indexed; ``str(e)`` is the reason."""


@dataclass
class LoadedDoc:
    pages: list[tuple[int | None, str]]  # (1-based page or None for text files, text)
    encoding: str | None = None
    notes: list[str] = field(default_factory=list)


def detect_encoding(data: bytes) -> str:
    """BOM, then strict UTF-8, then charset-normalizer. Short East-Asian texts are ambiguous
    (4 GBK characters also decode as Big5 or cp949), so when any Chinese reading is possible
    the candidates are ranked by how common their Han characters are in jieba's dictionary."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise SkipFile("could not detect a text encoding (binary file?)")
    enc = best.encoding.lower()
    scores = {c: _chinese_score(data, c) for c in dict.fromkeys([enc, "gb18030", "big5"])}
    top = max(scores, key=scores.get)
    # Override the detector only on a clear margin (mean log-frequency per character).
    return top if scores[top] > scores[enc] + 1.0 else enc


def _chinese_score(data: bytes, codec: str) -> float:
    """Mean log jieba frequency of the Han characters, scaled by their share of non-ASCII text."""
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return float("-inf")
    non_ascii = [c for c in text if ord(c) > 127 and not c.isspace()]
    han = [c for c in non_ascii if _HAN.match(c)]
    if not han:
        return 0.0
    from .tokenize import _jieba

    freq = _jieba().dt.FREQ
    return sum(math.log1p(freq.get(c, 0)) for c in han) / len(han) * len(han) / len(non_ascii)


def load_text(path: Path) -> LoadedDoc:
    data = path.read_bytes()
    if not data.strip():
        raise SkipFile("empty file")
    enc = detect_encoding(data)
    try:
        text = data.decode(enc)
    except (UnicodeDecodeError, LookupError) as e:
        raise SkipFile(f"cannot decode as detected encoding {enc}: {e}") from None
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        raise SkipFile(f"binary content (NUL bytes after decoding as {enc})")
    if not text.strip():
        raise SkipFile("no text (only whitespace)")
    return LoadedDoc(pages=[(None, text)], encoding=enc)


def load_pdf(path: Path) -> LoadedDoc:
    import pypdf
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # per-object warnings on odd PDFs
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            # Owner-password-only PDFs (print/copy restrictions) open with an empty password.
            try:
                ok = reader.decrypt("")
            except Exception as e:  # missing AES backend etc.
                raise SkipFile(f"encrypted PDF, cannot decrypt ({e.__class__.__name__}: {e})") from None
            if not ok:
                raise SkipFile("encrypted PDF (a password is required)")
        pages = []
        for i, page in enumerate(reader.pages, start=1):
            try:
                text = page.extract_text() or ""
            except Exception as e:  # one broken page: keep the rest
                text = ""
                logging.getLogger(__name__).warning("%s: page %d unreadable (%s)", path.name, i, e)
            text = text.replace("\r\n", "\n").replace("\x00", "")
            if text.strip():
                pages.append((i, text))
        n_pages = len(reader.pages)
    except SkipFile:
        raise
    except (PdfReadError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SkipFile(f"corrupt or unreadable PDF ({e.__class__.__name__}: {e})") from None
    if not pages:
        raise SkipFile(f"no extractable text in {n_pages} page(s) (scanned PDF? run OCR first)")
    return LoadedDoc(pages=pages)


LOADERS: dict[str, Callable[[Path], LoadedDoc]] = {
    **{s: load_text for s in TEXT_SUFFIXES},
    **{s: load_pdf for s in PDF_SUFFIXES},
}
from .formats import FORMAT_LOADERS  # noqa: E402 (DOCX/HTML/EPUB/PPTX/XLSX; they use LoadedDoc/SkipFile above)

LOADERS.update(FORMAT_LOADERS)


def supported(path: Path, ocr: bool = False) -> bool:
    from .ocr import OCR_SUFFIXES

    return path.suffix.lower() in LOADERS or (ocr and path.suffix.lower() in OCR_SUFFIXES)


def load_file(path: Path, ocr: bool = False) -> LoadedDoc:
    """Load one file or raise SkipFile with the reason. ``ocr``: images and scanned PDF pages are
    read by OCR (multi_agent.rag.ocr)."""
    from . import ocr as ocr_mod

    suffix = path.suffix.lower()
    loader = LOADERS.get(suffix) or (ocr_mod.load_image if ocr and suffix in ocr_mod.OCR_SUFFIXES else None)
    if loader is None:
        raise SkipFile(f"unsupported file type '{path.suffix}' (supported: {', '.join(sorted(LOADERS))})")
    try:
        try:
            return loader(path)
        except SkipFile as e:
            if ocr and suffix in PDF_SUFFIXES and str(e).startswith("no extractable text"):
                return ocr_mod.load_scanned_pdf(path)
            raise
    except OSError as e:
        raise SkipFile(f"cannot read file ({e.strerror or e})") from None
