"""OCR for images and scanned PDF pages (``RagConfig.ocr`` / ``--ocr``), with RapidOCR: the
``rapidocr-onnxruntime`` package ships its Chinese + English detection and recognition models
inside the wheel, so it runs offline. Off by default: a few seconds per image on a CPU, and photos
without text would otherwise be listed as skipped documents.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from .loaders import LoadedDoc, SkipFile

OCR_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MIN_CONFIDENCE = 0.5
_ENGINE = None
_LOCK = threading.Lock()


def _engine():
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError:
                raise SkipFile("OCR needs rapidocr-onnxruntime (pip install rapidocr-onnxruntime)") from None
            _ENGINE = RapidOCR()
        return _ENGINE


def ocr_image(image) -> str:
    """Text lines read from one image (a path, bytes or a PIL image), top to bottom."""
    import numpy as np
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    if isinstance(image, (str, Path)):
        image = Image.open(image)
    try:
        arr = np.asarray(image.convert("RGB"))
    except Exception as e:  # noqa: BLE001 (truncated or not an image)
        raise SkipFile(f"unreadable image ({e.__class__.__name__}: {e})") from None
    result, _ = _engine()(arr)
    lines = [(box[0][1], box[0][0], text) for box, text, score in (result or []) if float(score) >= MIN_CONFIDENCE]
    return "\n".join(text for _, _, text in sorted(lines))


def load_image(path: Path) -> LoadedDoc:
    text = ocr_image(path)
    if not text.strip():
        raise SkipFile("no text found in the image (OCR)")
    return LoadedDoc(pages=[(None, text)], notes=["ocr"])


def load_scanned_pdf(path: Path) -> LoadedDoc:
    """Pages without a text layer: OCR of the images embedded in each page."""
    import pypdf

    reader = pypdf.PdfReader(path)
    pages = []
    for i, page in enumerate(reader.pages, start=1):
        texts = []
        try:
            images = list(page.images)
        except Exception:  # noqa: BLE001 (an odd image filter: the other pages still count)
            images = []
        for img in images:
            try:
                texts.append(ocr_image(img.data))
            except SkipFile:
                continue
        text = "\n".join(t for t in texts if t.strip())
        if text.strip():
            pages.append((i, text))
    if not pages:
        raise SkipFile(f"no text found by OCR in {len(reader.pages)} page(s)")
    return LoadedDoc(pages=pages, notes=["ocr"])
