"""File loaders: text in any common encoding (detected, not guessed) and PDFs page by page.

A loader returns a :class:`LoadedDoc` (pages of text) or raises :class:`SkipFile` whose
message is the one-line reason shown to the user; one bad file never stops the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import PDF_SUFFIXES, TEXT_SUFFIXES

class SkipFile(Exception):
    """This file cannot be indexed; ``str(e)`` is the reason."""


@dataclass
class LoadedDoc:
    pages: list[tuple[int | None, str]]  # (1-based page or None for text files, text)
    encoding: str | None = None
    notes: list[str] = field(default_factory=list)


def detect_encoding(data: bytes) -> str:
    """The project's one detector (``vlft.data.encoding``: BOM, UTF-8, then CJK readings ranked
    by how common their characters and words are); an undetectable file is skipped."""
    from vlft.data.encoding import EncodingError
    from vlft.data.encoding import detect_encoding as detect

    try:
        return detect(data)
    except EncodingError:
        raise SkipFile("could not detect a text encoding (binary file?)") from None


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
