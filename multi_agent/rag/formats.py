"""Office and web formats: DOCX, HTML, EPUB, PPTX, XLSX, read into plain text with tables kept as
text (one row a line, cells separated by " | ").

DOCX goes through python-docx; HTML through lxml; EPUB, PPTX and XLSX are zip files of XML, read
with zipfile + lxml (no further packages). PPTX pages are slide numbers and XLSX pages are sheet
numbers, so a citation says "p. 3" for the third slide or sheet. Every loader raises SkipFile with
one line for a file it cannot read.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from pathlib import Path
from typing import Callable

from .loaders import LoadedDoc, SkipFile

CELL_SEP = " | "
MAX_ZIP_MEMBER = 200 * 1024 * 1024  # a zip bomb's member is refused, not inflated
_NS = {
    "w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "s": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
    "opf": "http://www.idpf.org/2007/opf",
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
}


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _need_text(pages: list[tuple[int | None, str]], what: str) -> LoadedDoc:
    pages = [(p, _tidy(t)) for p, t in pages]
    pages = [(p, t) for p, t in pages if t]
    if not pages:
        raise SkipFile(f"no text in this {what}")
    return LoadedDoc(pages=pages)


def _open_zip(path: Path, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SkipFile(f"corrupt or unreadable {what} ({e.__class__.__name__}: {e})") from None


def _xml(z: zipfile.ZipFile, name: str):
    from lxml import etree

    info = z.getinfo(name)
    if info.file_size > MAX_ZIP_MEMBER:
        raise SkipFile(f"{name} inflates to {info.file_size / 2**20:.0f} MB: refused")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    return etree.fromstring(z.read(name), parser)


# -- DOCX --------------------------------------------------------------------------------------
def load_docx(path: Path) -> LoadedDoc:
    """Paragraphs and tables in document order (python-docx)."""
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError:
        raise SkipFile("DOCX needs python-docx (pip install python-docx)") from None
    try:
        d = docx.Document(str(path))
    except Exception as e:  # noqa: BLE001 (python-docx raises many kinds for broken files)
        raise SkipFile(f"corrupt or unreadable DOCX ({e.__class__.__name__}: {e})") from None
    parts = []
    for block in d.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if tag == "p":
            parts.append(Paragraph(block, d).text)
        elif tag == "tbl":
            table = Table(block, d)
            parts.append("\n".join(CELL_SEP.join(c.text.strip() for c in row.cells) for row in table.rows))
    return _need_text([(None, "\n\n".join(parts))], "DOCX")


# -- HTML --------------------------------------------------------------------------------------
_BLOCKS = {"p", "div", "section", "article", "li", "br", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "pre",
           "blockquote", "dd", "dt", "header", "footer", "table", "ul", "ol", "figure", "caption"}


def html_text(root) -> str:
    """Visible text of an lxml HTML tree: scripts/styles dropped, blocks on their own lines, table
    rows as "cell | cell"."""
    for bad in root.xpath("//script|//style|//noscript|//template|//head"):
        bad.getparent().remove(bad)
    for row in root.xpath("//tr"):
        cells = [" ".join(c.text_content().split()) for c in row.xpath("./th|./td")]
        for c in list(row):
            row.remove(c)
        row.text = CELL_SEP.join(cells)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.lower() in _BLOCKS:
            el.tail = "\n" + (el.tail or "")
            if el.tag.lower() != "br":
                el.text = "\n" + (el.text or "")
    return root.text_content()


def _parse_html(data: bytes):
    import lxml.html

    try:
        return lxml.html.document_fromstring(data)
    except Exception as e:  # noqa: BLE001 (empty or broken markup)
        raise SkipFile(f"unreadable HTML ({e.__class__.__name__}: {e})") from None


def load_html(path: Path) -> LoadedDoc:
    data = path.read_bytes()
    if not data.strip():
        raise SkipFile("empty file")
    return _need_text([(None, html_text(_parse_html(data)))], "HTML page")


# -- EPUB --------------------------------------------------------------------------------------
def load_epub(path: Path) -> LoadedDoc:
    """The chapters in reading order (the OPF spine), as one text."""
    with _open_zip(path, "EPUB") as z:
        try:
            container = _xml(z, "META-INF/container.xml")
            opf_name = container.xpath("//c:rootfile/@full-path", namespaces=_NS)[0]
            opf = _xml(z, opf_name)
        except (KeyError, IndexError):
            raise SkipFile("not an EPUB (no META-INF/container.xml or package file)") from None
        base = posixpath.dirname(opf_name)
        items = {i.get("id"): i.get("href") for i in opf.xpath("//opf:manifest/opf:item", namespaces=_NS)}
        order = [items.get(r) for r in opf.xpath("//opf:spine/opf:itemref/@idref", namespaces=_NS)]
        chapters = []
        for href in filter(None, order):
            name = posixpath.normpath(posixpath.join(base, href.split("#")[0]))
            try:
                chapters.append(html_text(_parse_html(z.read(name))))
            except (KeyError, SkipFile):
                continue  # a missing or empty chapter: keep the others
    return _need_text([(None, "\n\n".join(chapters))], "EPUB")


# -- PPTX --------------------------------------------------------------------------------------
def _slide_number(name: str) -> int:
    m = re.search(r"(\d+)\.xml$", name)
    return int(m.group(1)) if m else 0


def load_pptx(path: Path) -> LoadedDoc:
    """One page per slide (its text boxes, tables and notes), numbered as in the deck."""
    with _open_zip(path, "PPTX") as z:
        slides = sorted((n for n in z.namelist() if re.fullmatch(r"ppt/slides/slide\d+\.xml", n)),
                        key=_slide_number)
        if not slides and "ppt/presentation.xml" not in z.namelist():
            raise SkipFile("not a PPTX (no ppt/presentation.xml)")
        pages = []
        for name in slides:
            root = _xml(z, name)
            lines = []
            for para in root.xpath("//a:p", namespaces=_NS):
                lines.append("".join(para.xpath(".//a:t/text()", namespaces=_NS)))
            notes = f"ppt/notesSlides/notesSlide{_slide_number(name)}.xml"
            if notes in z.namelist():
                lines += ["".join(p.xpath(".//a:t/text()", namespaces=_NS))
                          for p in _xml(z, notes).xpath("//a:p", namespaces=_NS)]
            pages.append((_slide_number(name), "\n".join(lines)))
    return _need_text(pages, "PPTX")


# -- XLSX --------------------------------------------------------------------------------------
def _col_index(ref: str) -> int:
    n = 0
    for ch in re.match(r"[A-Z]+", ref).group(0):
        n = n * 26 + ord(ch) - 64
    return n - 1


def load_xlsx(path: Path) -> LoadedDoc:
    """One page per worksheet: its name, then one line per row ("cell | cell"), values as shown
    in the cells (shared strings resolved; formulas give their cached value)."""
    with _open_zip(path, "XLSX") as z:
        names = z.namelist()
        if "xl/workbook.xml" not in names:
            raise SkipFile("not an XLSX (no xl/workbook.xml)")
        shared = []
        if "xl/sharedStrings.xml" in names:
            shared = ["".join(si.xpath(".//s:t/text()", namespaces=_NS))
                      for si in _xml(z, "xl/sharedStrings.xml").xpath("//s:si", namespaces=_NS)]
        book = _xml(z, "xl/workbook.xml")
        rels = {}
        if "xl/_rels/workbook.xml.rels" in names:
            rels = {r.get("Id"): r.get("Target") for r in
                    _xml(z, "xl/_rels/workbook.xml.rels").xpath("//rel:Relationship", namespaces=_NS)}
        pages = []
        for i, sheet in enumerate(book.xpath("//s:sheets/s:sheet", namespaces=_NS), start=1):
            target = rels.get(sheet.get(f"{{{_NS['r']}}}id"), f"worksheets/sheet{i}.xml")
            member = posixpath.normpath(posixpath.join("xl", target.lstrip("/").removeprefix("xl/")))
            if member not in names:
                continue
            rows = []
            for row in _xml(z, member).xpath("//s:sheetData/s:row", namespaces=_NS):
                cells: dict[int, str] = {}
                for c in row.xpath("./s:c", namespaces=_NS):
                    kind, v = c.get("t"), c.xpath("./s:v/text()", namespaces=_NS)
                    if kind == "s" and v:
                        value = shared[int(v[0])] if int(v[0]) < len(shared) else ""
                    elif kind == "inlineStr":
                        value = "".join(c.xpath(".//s:t/text()", namespaces=_NS))
                    else:
                        value = v[0] if v else ""
                    cells[_col_index(c.get("r", "A"))] = value
                if any(x.strip() for x in cells.values()):
                    width = max(cells) + 1
                    rows.append(CELL_SEP.join(cells.get(j, "") for j in range(width)))
            if rows:
                pages.append((i, f"{sheet.get('name', f'Sheet{i}')}\n" + "\n".join(rows)))
    return _need_text(pages, "XLSX workbook")


def _guarded(load: Callable[[Path], LoadedDoc], what: str) -> Callable[[Path], LoadedDoc]:
    """Any failure inside a broken file (bad XML in the zip, ...) becomes one skip line, never a
    traceback that stops the indexing run."""
    def run(path: Path) -> LoadedDoc:
        try:
            return load(path)
        except (SkipFile, OSError):
            raise
        except Exception as e:  # noqa: BLE001
            raise SkipFile(f"corrupt or unreadable {what} ({e.__class__.__name__}: {e})") from None
    return run


FORMAT_LOADERS: dict[str, Callable[[Path], LoadedDoc]] = {
    ".docx": _guarded(load_docx, "DOCX"), ".html": _guarded(load_html, "HTML page"),
    ".htm": _guarded(load_html, "HTML page"), ".xhtml": _guarded(load_html, "HTML page"),
    ".epub": _guarded(load_epub, "EPUB"), ".pptx": _guarded(load_pptx, "PPTX"), ".xlsx": _guarded(load_xlsx, "XLSX"),
}
