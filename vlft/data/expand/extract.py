"""Extraction: a local document -> sections of text (heading, page) and figures with their captions.

PDF text comes from the knowledge base's own loader (encryption, broken pages); text files are decoded
with its encoding detection. Figures are the images embedded in PDF pages, ``<img>``/``<figure>`` in
HTML, ``![alt](src)`` in Markdown and pictures in DOCX. A caption is taken only when the document gives
one: a "Figure 3: ..." / "图 3 ..." line (in a PDF, paired with the page's images only when the counts
match, so no caption lands on the wrong image), ``<figcaption>``, a Markdown title, or alt text.
Icons and logos (tiny or very thin images) and perceptual-hash duplicates are dropped.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Callable

from .sources import Document, SourceError, inside, is_url

log = logging.getLogger(__name__)

# "Figure 3: ...", "Fig. 3. ...", "图 3 ...", "图3：...".
CAPTION_RE = re.compile(r"^\s*(?:(?:Figure|FIGURE|Fig\.?)\s*(\d+)\s*[:.：\-–—]?|图\s*(\d+)\s*[:：.．、]?)\s*(\S.*)$")
# Numbered headings in PDF text: "2 Method", "2.1 Data", "第三章 结果".
PDF_HEADING_RE = re.compile(r"^(?:\d+(?:\.\d+){0,3}\.?|第[一二三四五六七八九十百\d]+[章节部分])\s+\S.{0,70}$")
AssetLoader = Callable[[str], bytes]


@dataclass
class Section:
    text: str
    heading: str | None = None
    page: int | None = None


@dataclass
class Figure:
    image: bytes                    # encoded image (PNG/JPEG/...)
    caption: str | None             # from the document, or None
    caption_kind: str | None        # "caption" (Figure N / figcaption / DOCX Caption), "alt", "title"
    page: int | None = None
    figure_id: str = ""             # "p3-img1", "img2", ...
    context: str = ""               # nearby text, for generating a caption when there is none
    width: int = 0
    height: int = 0
    phash: int = 0


@dataclass
class Extracted:
    doc: Document
    title: str | None = None
    sections: list[Section] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    pages: int = 0                  # PDF pages (1 for other documents)
    dropped: dict[str, int] = field(default_factory=dict)   # tiny / duplicate / unreadable images

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass
class ExtractConfig:
    min_image_side: int = 64        # smaller images are icons, bullets, logos
    max_aspect: float = 8.0         # thinner ones are rules and banners
    phash_distance: int = 5         # dHash Hamming distance at or below which two images are duplicates
    recurring_pages: int = 3        # a PDF image on this many pages or more is a header/footer decoration


def parse_caption(line: str) -> str | None:
    """The caption text of a "Figure N: ..." / "图 N ..." line, else None."""
    m = CAPTION_RE.match(line.strip())
    return m.group(3).strip() if m and len(m.group(3).strip()) >= 2 else None


def strip_label(caption: str | None) -> str | None:
    """"Figure 1: The crane" -> "The crane"; a caption without a label stays as it is."""
    return (parse_caption(caption) or caption.strip()) if caption else caption


def dhash(img) -> int:
    """64-bit difference hash: near-identical images (rescaled, recompressed) differ in few bits."""
    g = img.convert("L").resize((9, 8))
    px = list(g.getdata())
    bits = 0
    for r in range(8):
        for c in range(8):
            bits = (bits << 1) | (px[r * 9 + c] > px[r * 9 + c + 1])
    return bits


# -- entry point ---------------------------------------------------------------------------------
def extract(doc: Document, load_asset: AssetLoader | None = None, cfg: ExtractConfig | None = None) -> Extracted:
    """Extract one document; raises SourceError (one line) when nothing can be read."""
    cfg = cfg or ExtractConfig()
    fn = EXTRACTORS.get(doc.suffix)
    if fn is None:
        raise SourceError(f"unsupported file type '{doc.suffix}'")
    ex = fn(doc, load_asset or local_assets(doc), cfg)
    ex.figures = _filter_figures(ex.figures, cfg, ex.dropped)
    ex.sections = [s for s in ex.sections if s.text.strip()]
    if not ex.sections and not ex.figures:
        raise SourceError("no text and no figures found")
    return ex


def local_assets(doc: Document) -> AssetLoader:
    """Images referenced by a local document: only files inside its allowed root, and data: URLs."""
    def load(src: str) -> bytes:
        if src.startswith("data:"):
            return _data_url(src)
        if is_url(src):
            raise SourceError(f"{src}: remote image in a local document (not fetched)")
        p = (doc.path.parent / urllib.parse.unquote(src.split("?")[0].split("#")[0])).resolve()
        root = doc.root or doc.path.parent.resolve()
        if not inside(p, root):
            raise SourceError(f"{src}: outside {root}")
        if not p.is_file():
            raise SourceError(f"{src}: image file not found")
        return p.read_bytes()
    return load


def _data_url(src: str) -> bytes:
    head, _, data = src.partition(",")
    try:
        return base64.b64decode(data) if head.endswith(";base64") else urllib.parse.unquote_to_bytes(data)
    except ValueError:
        raise SourceError("bad data: URL") from None


def _filter_figures(figs: list[Figure], cfg: ExtractConfig, dropped: dict[str, int]) -> list[Figure]:
    from PIL import Image

    kept: list[Figure] = []
    for f in figs:
        try:
            with Image.open(io.BytesIO(f.image)) as im:
                im.load()
                f.width, f.height = im.size
                f.phash = dhash(im)
        except Exception:  # PIL raises many types on odd data
            dropped["unreadable"] = dropped.get("unreadable", 0) + 1
            continue
        if _too_small(f.width, f.height, cfg):
            dropped["tiny"] = dropped.get("tiny", 0) + 1
            continue
        dup = next((k for k in kept if bin(k.phash ^ f.phash).count("1") <= cfg.phash_distance), None)
        if dup is not None:
            if dup.caption is None and f.caption:   # keep the copy that has a caption
                dup.caption, dup.caption_kind = f.caption, f.caption_kind
            dropped["duplicate"] = dropped.get("duplicate", 0) + 1
            continue
        kept.append(f)
    return kept


def _too_small(w: int, h: int, cfg: ExtractConfig) -> bool:
    return min(w, h) < cfg.min_image_side or max(w, h) > cfg.max_aspect * min(w, h)


def _text_sections(text: str, page: int | None, heading: str | None, heading_re: re.Pattern | None
                   ) -> tuple[list[Section], str | None]:
    """Split text into sections at heading lines; returns them and the heading in force at the end."""
    out: list[Section] = []
    buf: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if heading_re is not None and heading_re.match(s) and not s.endswith(("。", ".", ",", "，")):
            if buf:
                out.append(Section("\n".join(buf).strip(), heading, page))
            heading, buf = s.lstrip("#").strip(), []
        else:
            buf.append(line)
    if "".join(buf).strip():
        out.append(Section("\n".join(buf).strip(), heading, page))
    return out, heading


# -- PDF -------------------------------------------------------------------------------------------
def extract_pdf(doc: Document, load_asset: AssetLoader, cfg: ExtractConfig) -> Extracted:
    import pypdf
    from multi_agent.rag.loaders import SkipFile, load_pdf

    ex = Extracted(doc)
    try:
        pages = load_pdf(doc.path).pages
    except SkipFile as e:
        if "no extractable text" not in str(e):
            raise SourceError(str(e)) from None
        pages = []          # a scanned PDF still has its figures
    text_of = dict(pages)
    heading = None
    for page, text in pages:
        secs, heading = _text_sections(text, page, heading, PDF_HEADING_RE)
        ex.sections += secs
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = pypdf.PdfReader(doc.path)
        if reader.is_encrypted:
            reader.decrypt("")
        ex.pages = len(reader.pages)
        per_page = [_pdf_page_images(page, ex.dropped, cfg) for page in reader.pages]
        _drop_recurring(per_page, ex.dropped, cfg)
        for no, (page, images) in enumerate(zip(reader.pages, per_page), start=1):
            ex.figures += _pair_captions(images, no, text_of.get(no, ""), page)
    except Exception as e:  # images are a bonus: text already extracted stays
        log.warning("%s: images not extracted (%s: %s)", doc.origin, e.__class__.__name__, e)
    return ex


@dataclass
class _PdfImage:
    data: bytes
    hash: int
    box: tuple[float, float, float, float] | None   # x, bottom, width, height in page space (None: unknown)
    name: str = ""


def _pdf_page_images(page, dropped: dict[str, int], cfg: ExtractConfig) -> list[_PdfImage]:
    """The page's images that are not icons, top to bottom where their placement is known."""
    out = []
    try:
        for img in page.images:
            try:
                im = img.image
                if _too_small(*im.size, cfg):   # before pairing: an icon must not take a figure's caption
                    dropped["tiny"] = dropped.get("tiny", 0) + 1
                    continue
                data = img.data if img.name.lower().endswith((".jpg", ".jpeg", ".png")) else _png(im)
                out.append(_PdfImage(data, dhash(im), None, img.name))
            except Exception:  # one undecodable image (odd filter, broken stream): keep the others
                dropped["unreadable"] = dropped.get("unreadable", 0) + 1
    except Exception:
        dropped["unreadable"] = dropped.get("unreadable", 0) + 1
    return out


def _layout(page, images: list[_PdfImage]) -> list[tuple[str, float, float]]:
    """One pass over the page's content stream: sets each image's box (from the transformation matrix at
    its ``Do``), sorts the images top to bottom, and returns the (caption, x, y) of its "Figure N" lines."""
    boxes: dict[str, tuple[float, float, float, float]] = {}
    frags: list[tuple[float, float, str]] = []

    def before(op, args, cm, tm):
        if op == b"Do" and args:
            a, b, c, d, e, f = cm
            xs, ys = (e, e + a, e + c, e + a + c), (f, f + b, f + d, f + b + d)
            boxes[str(args[0]).lstrip("/")] = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))

    def visit(text, cm, tm, font, size):
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            frags.append((round(y, 0), x, text))
    page.extract_text(visitor_operand_before=before, visitor_text=visit)
    for img in images:     # pypdf names an image after its XObject plus an extension ("Im1.png" for /Im1)
        img.box = boxes.get(img.name.rsplit(".", 1)[0])
    if all(i.box for i in images):
        images.sort(key=lambda i: (-(i.box[1] + i.box[3]), i.box[0]))
    lines: dict[float, list[tuple[float, str]]] = {}
    for y, x, text in frags:
        lines.setdefault(y, []).append((x, text))
    ordered = sorted(lines.items(), key=lambda kv: -kv[0])
    texts = ["".join(t for _, t in sorted(parts)).replace("\n", " ").strip() for _, parts in ordered]
    out = []
    for i, (y, parts) in enumerate(ordered):
        if parse_caption(texts[i]):
            cap = page_captions("\n".join(texts[i:i + 4]))[0]
            out.append((cap, min(x for x, _ in parts), y))
    return out


def _drop_recurring(per_page: list[list[_PdfImage]], dropped: dict[str, int], cfg: ExtractConfig) -> None:
    """Remove, in place, images found on ``cfg.recurring_pages`` or more pages (a logo in every page header):
    decoration, and left in they would take captions or break a page's image/caption count."""
    hashes = [{i.hash for i in imgs} for imgs in per_page]
    for imgs in per_page:
        keep = []
        for img in imgs:
            pages = sum(any(bin(img.hash ^ o).count("1") <= cfg.phash_distance for o in hs) for hs in hashes)
            if pages >= cfg.recurring_pages:
                dropped["recurring"] = dropped.get("recurring", 0) + 1
            else:
                keep.append(img)
        imgs[:] = keep


def page_captions(text: str) -> list[str]:
    """The "Figure N: ..." captions of a PDF page, a caption wrapped over several lines joined back: a line
    continues the caption while the caption has no final stop and the line starts in lower case."""
    lines = [ln.strip() for ln in text.splitlines()]
    out = []
    for i, line in enumerate(lines):
        cap = parse_caption(line)
        if not cap:
            continue
        for nxt in lines[i + 1:i + 4]:
            if cap.endswith((".", "。", "!", "?", "！", "？")) or not nxt[:1].islower() or parse_caption(nxt):
                break
            cap = f"{cap} {nxt}"
        out.append(cap)
    return out


MAX_CAPTION_GAP = 72.0   # points (one inch): a caption further below its figure is not taken as its caption


def _pair_captions(images: list[_PdfImage], no: int, text: str, page=None) -> list[Figure]:
    """Captions to images. With positions: each caption goes to the nearest free image above it (at most
    MAX_CAPTION_GAP below the image's bottom edge), so subfigures, stray images and a drawing order unlike
    the file's order are handled. Without: the page's captions go to its images in order, and only when
    there are as many of each. Never a guess."""
    context = " ".join(text.split())[:800]
    lines = []
    if page is not None and images:
        try:
            lines = _layout(page, images)
        except Exception:  # an odd content stream: pairing falls back to counts
            lines = []
    caps: list[str | None] = [None] * len(images)
    if lines and all(i.box for i in images):
        caps = _pair_by_position(images, lines)
    else:   # no positions (inline images, captions in form XObjects): equal counts or nothing
        found = page_captions(text)
        if len(found) == len(images):
            caps = list(found)
    return [Figure(img.data, caps[i], "caption" if caps[i] else None, no, f"p{no}-img{i + 1}", context)
            for i, img in enumerate(images)]


def _pair_by_position(images: list[_PdfImage], lines: list[tuple[str, float, float]]) -> list[str | None]:
    """Closest (caption below image, horizontally under it) pairs first; each caption and image used once.
    A loose layout where some caption found no image, but the counts are equal, pairs top to bottom."""
    pairs = []
    for ci, (_, cx, cy) in enumerate(lines):
        for ii, img in enumerate(images):
            x, bottom, w, h = img.box
            gap = bottom - cy
            if -h / 2 <= gap <= MAX_CAPTION_GAP and x - 36 <= cx <= x + w:
                pairs.append((gap, ci, ii))
    caps: list[str | None] = [None] * len(images)
    used_c, used_i = set(), set()
    for _, ci, ii in sorted(pairs):
        if ci not in used_c and ii not in used_i:
            used_c.add(ci)
            used_i.add(ii)
            caps[ii] = lines[ci][0]
    if len(used_c) < len(lines) and len(lines) == len(images):
        caps = [cap for cap, _, _ in lines]
    return caps


def _png(im) -> bytes:
    buf = io.BytesIO()
    (im if im.mode in ("RGB", "L", "RGBA") else im.convert("RGB")).save(buf, format="PNG")
    return buf.getvalue()


# -- HTML ------------------------------------------------------------------------------------------
_SKIP = {"script", "style", "noscript", "template", "svg", "nav", "footer"}
_BLOCK = {"p", "div", "li", "ul", "ol", "tr", "td", "th", "pre", "blockquote", "section", "article", "br",
          "table", "dd", "dt", "figure", "main"}


class _HtmlDoc(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.title: str | None = None
        self.links: list[str] = []
        self.images: list[dict] = []          # {"src", "alt", "title", "caption", "context"}
        self._heading: str | None = None
        self._buf: list[str] = []
        self._skip = 0
        self._in_heading: list[str] | None = None
        self._in_title: list[str] | None = None
        self._figure: list[dict] | None = None
        self._figcap: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in _SKIP:
            self._skip += 1
            return
        if tag == "title":
            self._in_title = []
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush()
            self._in_heading = []
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "figure":
            self._figure = []
        elif tag == "figcaption":
            self._figcap = []
        elif tag == "img" and (a.get("src") or a.get("data-src")) and not self._skip:
            # Lazy-loading pages put the real image in data-src and a placeholder in src.
            src = a.get("data-src") or a["src"]
            img = {"src": src, "alt": (a.get("alt") or "").strip(), "title": (a.get("title") or "").strip(),
                   "caption": None, "context": self._context()}
            self.images.append(img)
            if self._figure is not None:
                self._figure.append(img)
        if tag in _BLOCK:
            self._buf.append("\n")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if tag == "title" and self._in_title is not None:
            self.title = " ".join("".join(self._in_title).split()) or None
            self._in_title = None
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self._in_heading is not None:
            self._heading = " ".join("".join(self._in_heading).split()) or self._heading
            self._in_heading = None
        elif tag == "figcaption" and self._figcap is not None:
            cap = " ".join("".join(self._figcap).split())
            for img in self._figure or []:
                img["caption"] = cap or None
            self._figcap = None
        elif tag == "figure":
            self._figure = None
        if tag in _BLOCK:
            self._buf.append("\n")

    def handle_data(self, data):
        if self._skip:
            return
        if self._in_title is not None:
            self._in_title.append(data)
        elif self._in_heading is not None:
            self._in_heading.append(data)
        else:
            if self._figcap is not None:
                self._figcap.append(data)
            self._buf.append(data)

    def _context(self) -> str:
        return " ".join("".join(self._buf[-40:]).split())[-400:]

    def _flush(self):
        text = re.sub(r"[ \t\r\f\v]+", " ", "".join(self._buf))
        text = re.sub(r"\s*\n\s*", "\n", text).strip()
        if text:
            self.sections.append(Section(text, self._heading))
        self._buf = []

    def close(self):
        super().close()
        self._flush()


def _decode(doc: Document) -> str:
    from multi_agent.rag.loaders import SkipFile, load_text
    try:
        return load_text(doc.path).pages[0][1]
    except SkipFile as e:
        raise SourceError(str(e)) from None


def extract_html(doc: Document, load_asset: AssetLoader, cfg: ExtractConfig) -> Extracted:
    p = _HtmlDoc()
    p.feed(_decode(doc))
    p.close()
    ex = Extracted(doc, title=p.title, sections=p.sections, pages=1)
    doc.links = p.links
    for i, img in enumerate(p.images, start=1):
        cap, kind = (img["caption"], "caption") if img["caption"] else \
            (img["alt"], "alt") if img["alt"] else (img["title"], "title") if img["title"] else (None, None)
        data = _asset(load_asset, img["src"], doc, ex.dropped)
        if data is not None:
            ex.figures.append(Figure(data, strip_label(cap), kind, None, f"img{i}", img["context"]))
    return ex


def _asset(load_asset: AssetLoader, src: str, doc: Document, dropped: dict[str, int]) -> bytes | None:
    try:
        return load_asset(src)
    except SourceError as e:
        log.info("%s: image skipped: %s", doc.origin, e)
        dropped["unreadable"] = dropped.get("unreadable", 0) + 1
        return None


# -- Markdown / text ---------------------------------------------------------------------------------
_MD_IMG = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+[\"']([^\"']*)[\"'])?\s*\)")
_MD_HEADING = re.compile(r"^#{1,6}\s+\S")
_MD_CODE = re.compile(r"`[^`]*`")


def extract_markdown(doc: Document, load_asset: AssetLoader, cfg: ExtractConfig) -> Extracted:
    text = _decode(doc)
    ex = Extracted(doc, pages=1)
    lines = text.splitlines()
    n = 0
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if fenced:
            continue            # code blocks and `inline code` show image syntax, they do not embed images
        for m in _MD_IMG.finditer(_MD_CODE.sub("", line)):
            n += 1
            alt, src, title = m.group(1).strip(), m.group(2), (m.group(3) or "").strip()
            nxt = next((ln.strip().strip("*_") for ln in lines[i + 1:i + 3] if ln.strip()), "")
            cap, kind = (parse_caption(nxt), "caption") if parse_caption(nxt) else \
                (title, "title") if title else (alt, "alt") if alt else (None, None)
            data = _asset(load_asset, src, doc, ex.dropped)
            if data is not None:
                ctx = " ".join(" ".join(lines[max(0, i - 5):i]).split())[-400:]
                ex.figures.append(Figure(data, strip_label(cap), kind, None, f"img{n}", ctx))
    clean = _MD_IMG.sub(lambda m: m.group(1), text)
    ex.sections, _ = _text_sections(clean, None, None, _MD_HEADING)
    for s in ex.sections:
        if s.heading and ex.title is None:
            ex.title = s.heading
    return ex


def extract_text(doc: Document, load_asset: AssetLoader, cfg: ExtractConfig) -> Extracted:
    return Extracted(doc, sections=[Section(_decode(doc).strip())], pages=1)


# -- DOCX ----------------------------------------------------------------------------------------------
def extract_docx(doc: Document, load_asset: AssetLoader, cfg: ExtractConfig) -> Extracted:
    try:
        import docx  # python-docx
    except ImportError:
        raise SourceError("DOCX needs python-docx (pip install python-docx)") from None
    try:
        d = docx.Document(str(doc.path))
    except Exception as e:  # zipfile/KeyError/lxml errors on broken files
        raise SourceError(f"unreadable DOCX ({e.__class__.__name__}: {e})") from None
    ex = Extracted(doc, title=d.core_properties.title or None, pages=1)
    paras = d.paragraphs
    heading, buf = None, []
    blip = "{http://schemas.openxmlformats.org/drawingml/2006/main}blip"
    rel = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}embed"
    for i, p in enumerate(paras):
        style = (p.style.name if p.style is not None else "") or ""
        if style.lower().startswith(("heading", "title")) and p.text.strip():
            if buf:
                ex.sections.append(Section("\n".join(buf), heading))
            heading, buf = p.text.strip(), []
            continue
        for el in p._p.iter(blip):
            part = d.part.related_parts.get(el.get(rel))
            if part is None:
                continue
            nxt = paras[i + 1] if i + 1 < len(paras) else None
            cap = None
            if nxt is not None:
                nstyle = (nxt.style.name if nxt.style is not None else "") or ""
                cap = strip_label(nxt.text) if nstyle.lower() == "caption" else parse_caption(nxt.text)
            ex.figures.append(Figure(part.blob, cap, "caption" if cap else None, None,
                                     f"img{len(ex.figures) + 1}", " ".join(buf)[-400:]))
        if p.text.strip():
            buf.append(p.text.strip())
    if buf:
        ex.sections.append(Section("\n".join(buf), heading))
    return ex


EXTRACTORS: dict[str, Callable[[Document, AssetLoader, ExtractConfig], Extracted]] = {
    ".pdf": extract_pdf, ".html": extract_html, ".htm": extract_html,
    ".md": extract_markdown, ".markdown": extract_markdown, ".mdx": extract_markdown,
    ".txt": extract_text, ".docx": extract_docx,
}


def image_name(doc_key: str, fig: Figure) -> str:
    """A stable file name for a figure: document key + figure id + content hash."""
    ext = ".jpg" if fig.image[:3] == b"\xff\xd8\xff" else ".png"
    return f"{doc_key}-{fig.figure_id}-{hashlib.sha256(fig.image).hexdigest()[:8]}{ext}"
