"""OCR (--ocr): an image and a scanned PDF (a page that is only a picture of text) become
searchable through RapidOCR's bundled offline models; without --ocr they are not read."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rapidocr_onnxruntime")

from multi_agent.rag import KnowledgeBase, RagConfig  # noqa: E402


def _text_image(path: Path, text: str) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (1000, 140), "white")
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 40)
    except OSError:
        font = ImageFont.load_default(size=40)
    ImageDraw.Draw(img).text((20, 40), text, fill="black", font=font)
    img.save(path)
    return path


@pytest.mark.slow
def test_images_and_scanned_pdfs_are_read_with_ocr(tmp_path, tiny_embedder):
    from fpdf import FPDF

    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    _text_image(kb_dir / "whiteboard.png", "The quokka lives on Rottnest Island")
    scan = _text_image(tmp_path / "scan.png", "Wombat droppings are cube shaped")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(str(scan), x=10, y=10, w=190)
    pdf.output(str(kb_dir / "scanned.pdf"))

    rep = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, embedder=tiny_embedder)).index()
    assert [p for p, _ in rep.ignored] == ["whiteboard.png"]
    assert "no extractable text" in dict(rep.skipped)["scanned.pdf"]

    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, ocr=True))    # OCR on: both retried
    rep = kb.index()
    assert rep.added == 2 and not rep.skipped and not rep.ignored
    hit = kb.search("quokka Rottnest", k=1)[0]
    assert hit.source == "whiteboard.png" and "Rottnest" in hit.text
    hit = kb.search("wombat cube droppings", k=1)[0]
    assert (hit.source, hit.page) == ("scanned.pdf", 1) and "cube" in hit.text.lower()
