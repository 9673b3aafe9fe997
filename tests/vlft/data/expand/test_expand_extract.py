"""Extraction from real files: PDF (reportlab, English and Chinese captions), HTML, Markdown, TXT, DOCX."""

from __future__ import annotations

import io

import pytest
from conftest import icon, photo, write_pdf

from vlft.data.expand.extract import ExtractConfig, dhash, extract, parse_caption
from vlft.data.expand.sources import SourceError, local_document


def _doc(path, root=None):
    return local_document(str(path), (root or path.parent).resolve())


@pytest.mark.parametrize("line,caption", [
    ("Figure 3: Revenue by region", "Revenue by region"),
    ("Fig. 2. The pipeline", "The pipeline"),
    ("FIGURE 10 — Results", "Results"),
    ("图 3 各地区收入", "各地区收入"),
    ("图3：模型结构", "模型结构"),
    ("As Figure 3 shows, revenue grew", None),
    ("The figure below", None),
])
def test_parse_caption(line, caption):
    assert parse_caption(line) == caption


def test_pdf_figures_captions_tiny_and_duplicates(docs_dir):
    ex = extract(_doc(docs_dir / "report.pdf"))
    assert ex.pages == 3
    caps = {f.page: f.caption for f in ex.figures}
    # The icon on page 1 is dropped before pairing, so the page's one caption goes to its photo.
    assert caps == {1: "A kitchen with people preparing pizzas on a wooden table.", 2: "一只猫躺在沙发上晒太阳"}
    assert ex.dropped == {"tiny": 1, "duplicate": 1}   # page 3 repeats page 1's photo, smaller
    assert [s.heading for s in ex.sections] == ["1 Introduction", "2 方法", "3 Appendix"]
    assert [s.page for s in ex.sections] == [1, 2, 3]
    assert "集装箱运输量" in ex.sections[1].text


def test_pdf_caption_goes_to_the_photo_right_above_it(tmp_path, coco_images):
    # Two photos, one caption just below the second: the first photo stays without a caption.
    p = write_pdf(tmp_path / "two.pdf", [(["Figure 1: Only one caption here."], [photo(coco_images, 0),
                                                                                photo(coco_images, 1)])])
    assert [f.caption for f in extract(_doc(p)).figures] == [None, "Only one caption here."]


def test_without_positions_captions_pair_only_on_equal_counts():
    from vlft.data.expand.extract import _pair_captions, _PdfImage

    imgs = [_PdfImage(b"a", 0, None), _PdfImage(b"b", 1, None)]
    assert [f.caption for f in _pair_captions(imgs, 1, "Figure 1: One.\nFigure 2: Two.")] == ["One.", "Two."]
    assert [f.caption for f in _pair_captions(imgs, 1, "Figure 1: Only one.")] == [None, None]


def test_html_figcaption_alt_and_outside_root(docs_dir):
    ex = extract(_doc(docs_dir / "page.html"))
    assert ex.title == "Harbour report"
    got = [(f.figure_id, f.caption, f.caption_kind) for f in ex.figures]
    assert got == [("img1", "Fishing boats moored at the pier.", "caption"),
                   ("img3", "A busy street next to the harbour at noon", "alt")]
    # logo: tiny; ../outside.jpg resolves outside the folder the user named: never read.
    assert ex.dropped == {"tiny": 1, "unreadable": 1}
    assert "Home | About" not in ex.text        # <nav> is boilerplate
    assert [s.heading for s in ex.sections] == ["Harbour report", "Streets"]


def test_symlinked_image_outside_root_is_not_read(docs_dir, tmp_path):
    (docs_dir / "img" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (docs_dir / "link.html").write_text("<p>text</p><img src='img/link.jpg' alt='a linked photo outside'>",
                                        encoding="utf-8")
    ex = extract(_doc(docs_dir / "link.html"))
    assert ex.figures == [] and ex.dropped == {"unreadable": 1}


def test_markdown_caption_line_wins_over_alt(docs_dir):
    ex = extract(_doc(docs_dir / "notes.md"))
    assert [(f.caption, f.caption_kind) for f in ex.figures] == [("停靠在码头的渔船", "caption")]
    assert ex.title == "港口笔记"
    assert "渔船数量明显增加" in ex.text


def test_text_and_gbk(tmp_path):
    p = tmp_path / "gbk.txt"
    p.write_bytes("港口今年新建了两个泊位，货物吞吐量增加。".encode("gbk"))
    assert "新建了两个泊位" in extract(_doc(p)).text


def test_docx_heading_picture_caption(tmp_path, coco_images):
    docx = pytest.importorskip("docx")
    d = docx.Document()
    d.add_heading("Port report", level=1)
    d.add_paragraph("Cranes at the terminal were replaced in May.")
    d.add_picture(io.BytesIO(photo(coco_images, 2)))
    d.add_paragraph("Figure 4: New cranes at the terminal.", style="Caption")
    d.add_picture(io.BytesIO(photo(coco_images, 3)))
    d.add_paragraph("An uncaptioned photo follows the text.")
    d.save(tmp_path / "r.docx")
    ex = extract(_doc(tmp_path / "r.docx"))
    assert [f.caption for f in ex.figures] == ["New cranes at the terminal.", None]
    assert ex.sections[0].heading == "Port report" and "replaced in May" in ex.sections[0].text


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"%PDF-1.7\nnot really", "PDF")])
def test_bad_files_one_line(tmp_path, content, reason):
    p = tmp_path / ("bad.pdf" if content else "empty.txt")
    p.write_bytes(content)
    with pytest.raises(SourceError, match=reason):
        extract(_doc(p))


def test_dhash_near_duplicates(coco_images):
    from PIL import Image

    a = dhash(Image.open(io.BytesIO(photo(coco_images, 0))))
    b = dhash(Image.open(io.BytesIO(photo(coco_images, 0, 200))))
    c = dhash(Image.open(io.BytesIO(photo(coco_images, 1))))
    assert bin(a ^ b).count("1") <= ExtractConfig().phash_distance < bin(a ^ c).count("1")
    assert icon()  # the tiny fixture image decodes


def test_html_lazy_loaded_image_uses_data_src(docs_dir):
    (docs_dir / "lazy.html").write_text(
        "<p>Report.</p><figure><img src='data:image/gif;base64,R0lGODlhAQABAAAAACw=' data-src='img/street.jpg'>"
        "<figcaption>Noon traffic beside the harbour.</figcaption></figure>", encoding="utf-8")
    ex = extract(_doc(docs_dir / "lazy.html"))
    assert [(f.caption, f.width) for f in ex.figures] == [("Noon traffic beside the harbour.", 640)]


def test_pdf_logo_on_every_page_does_not_break_captions(tmp_path, coco_images):
    """A header logo (big enough not to be an icon) on every page is dropped before pairing, so each page's
    one photo still gets its one caption."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (160, 80), (20, 60, 160)).save(buf, format="PNG")
    logo = buf.getvalue()
    pages = [([f"Figure {i + 1}: Photo number {i + 1} of the survey."], [logo, photo(coco_images, i)]) for i in range(4)]
    ex = extract(_doc(write_pdf(tmp_path / "logo.pdf", pages)))
    assert [f.caption for f in ex.figures] == [f"Photo number {i + 1} of the survey." for i in range(4)]
    assert ex.dropped == {"recurring": 4}


def test_wrapped_pdf_caption_is_joined_and_body_text_is_not():
    from vlft.data.expand.extract import page_captions

    text = ("Figure 1: Container throughput of the three terminals\nin 2023, by month.\nThe next paragraph starts "
            "here.\nFigure 2: Revenue by region\nSales grew in every region.\n图 3 港口吞吐量\n按月统计")
    assert page_captions(text) == ["Container throughput of the three terminals in 2023, by month.",
                                   "Revenue by region", "港口吞吐量"]


def _canvas_pdf(path, draw):
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    draw(c)
    c.showPage()
    c.save()
    return path


def test_pdf_captions_follow_positions_not_file_order(tmp_path, coco_images):
    """Two figures each with its caption right below; the file lists the images in another order than the
    page draws them, and a third uncaptioned photo sits at the bottom: positions decide."""
    from reportlab.lib.utils import ImageReader

    def draw(c):
        c.setFont("Helvetica", 10)
        c.drawImage(ImageReader(io.BytesIO(photo(coco_images, 5))), 72, 610, width=200, height=150)
        c.drawString(72, 596, "Figure 1: The upper photo.")
        c.drawImage(ImageReader(io.BytesIO(photo(coco_images, 1))), 72, 400, width=200, height=150)
        c.drawString(72, 386, "Figure 2: The middle photo.")
        c.drawString(72, 300, "Body text between the figures, long enough to be a paragraph.")
        c.drawImage(ImageReader(io.BytesIO(photo(coco_images, 2))), 72, 80, width=200, height=150)
    ex = extract(_doc(_canvas_pdf(tmp_path / "pos.pdf", draw)))
    got = [(f.figure_id, f.caption) for f in ex.figures]
    assert got == [("p1-img1", "The upper photo."), ("p1-img2", "The middle photo."), ("p1-img3", None)]
    from PIL import Image
    upper = Image.open(io.BytesIO(ex.figures[0].image))
    assert dhash(upper) == dhash(Image.open(io.BytesIO(photo(coco_images, 5))))   # the right picture


def test_markdown_image_syntax_in_code_is_not_an_image(docs_dir):
    (docs_dir / "code.md").write_text("Use `![alt](img/boats.jpg)` to embed.\n\n```\n![x](img/street.jpg)\n```\n\n"
                                      "![Boats in the harbour at dawn](img/boats.jpg)\n", encoding="utf-8")
    ex = extract(_doc(docs_dir / "code.md"))
    assert [f.caption for f in ex.figures] == ["Boats in the harbour at dawn"] and not ex.dropped
