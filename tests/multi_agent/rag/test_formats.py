"""DOCX, HTML, EPUB, PPTX and XLSX: real files written by python-docx, python-pptx, openpyxl and
zipfile, loaded, indexed and found by search, with tables kept as text and slide/sheet pages."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from multi_agent.rag import KnowledgeBase, RagConfig
from multi_agent.rag.loaders import SkipFile, load_file


def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Aardvark field notes", 1)
    d.add_paragraph("The aardvark digs burrows with its strong claws.")
    t = d.add_table(rows=2, cols=2)
    t.cell(0, 0).text, t.cell(0, 1).text = "animal", "diet"
    t.cell(1, 0).text, t.cell(1, 1).text = "aardvark", "termites"
    d.add_paragraph("It sleeps during the day.")
    d.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    from pptx import Presentation

    p = Presentation()
    for title, body in [("Intro", "Welcome to the pangolin talk."), ("Scales", "Pangolin scales are keratin.")]:
        s = p.slides.add_slide(p.slide_layouts[1])
        s.shapes.title.text = title
        s.placeholders[1].text = body
    p.save(str(path))
    return path


def make_xlsx(path: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Budget"
    ws.append(["item", "cost"])
    ws.append(["binoculars", 120])
    ws2 = wb.create_sheet("Sightings")
    ws2.append(["species", "count"])
    ws2.append(["narwhal", 7])
    wb.save(str(path))
    return path


def make_epub(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" '
                   'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
                   'full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("OEBPS/content.opf", '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" '
                   'version="3.0"><manifest><item id="c2" href="ch2.xhtml" media-type="application/xhtml+xml"/>'
                   '<item id="c1" href="ch1.xhtml" media-type="application/xhtml+xml"/></manifest>'
                   '<spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>')
        z.writestr("OEBPS/ch1.xhtml", "<html><body><h1>Chapter 1</h1><p>The axolotl regrows its limbs.</p></body></html>")
        z.writestr("OEBPS/ch2.xhtml", "<html><body><h1>Chapter 2</h1><p>It stays larval all its life.</p></body></html>")
    return path


HTML = ("<html><head><title>t</title><style>p{color:red}</style><script>var secret=1;</script></head><body>"
        "<h1>Quoll facts</h1><p>The quoll is a carnivorous marsupial.</p><table><tr><th>name</th><th>size</th></tr>"
        "<tr><td>spotted quoll</td><td>small</td></tr></table></body></html>")


def test_each_format_loads_with_tables_and_pages(tmp_path):
    docx_doc = load_file(make_docx(tmp_path / "notes.docx"))
    text = docx_doc.pages[0][1]
    assert "digs burrows" in text and "aardvark | termites" in text
    assert text.index("digs burrows") < text.index("aardvark | termites") < text.index("sleeps")

    (tmp_path / "page.html").write_text(HTML, encoding="utf-8")
    html = load_file(tmp_path / "page.html").pages[0][1]
    assert "carnivorous marsupial" in html and "spotted quoll | small" in html
    assert "secret" not in html and "color" not in html

    epub = load_file(make_epub(tmp_path / "book.epub")).pages[0][1]
    assert epub.index("regrows") < epub.index("larval")          # spine order, not manifest order

    slides = load_file(make_pptx(tmp_path / "talk.pptx")).pages
    assert [p for p, _ in slides] == [1, 2] and "keratin" in slides[1][1]

    sheets = load_file(make_xlsx(tmp_path / "data.xlsx")).pages
    assert sheets[0] == (1, "Budget\nitem | cost\nbinoculars | 120")
    assert sheets[1][0] == 2 and "narwhal | 7" in sheets[1][1]


@pytest.mark.parametrize("name", ["bad.docx", "bad.pptx", "bad.xlsx", "bad.epub"])
def test_broken_files_are_one_line_skips(tmp_path, name):
    (tmp_path / name).write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(SkipFile, match="corrupt or unreadable"):
        load_file(tmp_path / name)


def test_formats_are_indexed_and_found(tmp_path, tiny_embedder):
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    make_docx(kb_dir / "notes.docx")
    make_pptx(kb_dir / "talk.pptx")
    make_xlsx(kb_dir / "data.xlsx")
    make_epub(kb_dir / "book.epub")
    (kb_dir / "page.html").write_text(HTML, encoding="utf-8")
    kb = KnowledgeBase(RagConfig(kb_dir=kb_dir, reranker=None, embedder=tiny_embedder))
    rep = kb.index()
    assert rep.added == 5 and not rep.skipped and not rep.ignored
    hit = kb.search("pangolin scales keratin", k=1)[0]
    assert (hit.source, hit.page) == ("talk.pptx", 2)
    assert kb.search("narwhal count sightings", k=1)[0].source == "data.xlsx"
    assert kb.search("axolotl regrows limbs", k=1)[0].source == "book.epub"
