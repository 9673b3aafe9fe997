"""Fixtures for the data-expansion tests: real PDFs (reportlab, Chinese through its built-in STSong-Light
CID font) with embedded COCO photos and captions, HTML pages with figures, and a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
from pathlib import Path

import pytest

EN_TEXT = ["1 Introduction",
           "The harbour survey counted cargo ships and fishing boats during the spring season.",
           "Container traffic grew by twelve percent compared with the previous year.",
           "Figure 1: A kitchen with people preparing pizzas on a wooden table."]
ZH_PAGE = ["2 方法",
           "本报告统计了春季港口的货船和渔船数量，集装箱运输量比去年增长了百分之十二。",
           "图 2 一只猫躺在沙发上晒太阳"]


def photo(coco_images: list[Path], i: int, size: int | None = None) -> bytes:
    """A real COCO JPEG (optionally resized: a near-duplicate of the original)."""
    from PIL import Image

    if size is None:
        return coco_images[i].read_bytes()
    with Image.open(coco_images[i]) as im:
        buf = io.BytesIO()
        im.convert("RGB").resize((size, size * im.height // im.width)).save(buf, format="JPEG", quality=80)
        return buf.getvalue()


def icon() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def write_pdf(path: Path, pages: list[tuple[list[str], list[bytes]]]) -> Path:
    """One PDF page per (lines, images): images drawn above the lines, Chinese with STSong-Light."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path))
    for lines, images in pages:
        y = 800
        for data in images:
            c.drawImage(ImageReader(io.BytesIO(data)), 72, y - 160, width=200, height=150)
            y -= 170
        for line in lines:
            cjk = any(ord(ch) > 0x2e80 for ch in line)
            c.setFont("STSong-Light" if cjk else "Helvetica", 11)
            c.drawString(72, y, line)
            y -= 18
        c.showPage()
    c.save()
    return path


@pytest.fixture
def docs_dir(tmp_path, coco_images) -> Path:
    """report.pdf (English page + Chinese page, a tiny icon, a duplicate photo), page.html, notes.md, plain.txt."""
    d = tmp_path / "docs"
    (d / "img").mkdir(parents=True)
    write_pdf(d / "report.pdf", [(EN_TEXT, [photo(coco_images, 0), icon()]),
                                 (ZH_PAGE, [photo(coco_images, 1)]),
                                 (["3 Appendix", "The same photo again, smaller."], [photo(coco_images, 0, 320)])])
    (d / "img" / "boats.jpg").write_bytes(photo(coco_images, 2))
    (d / "img" / "logo.png").write_bytes(icon())
    (d / "img" / "street.jpg").write_bytes(photo(coco_images, 3))
    (d / "page.html").write_text(
        "<html><head><title>Harbour report</title><style>p{}</style></head><body>"
        "<nav>Home | About</nav><h1>Harbour report</h1><p>The harbour handled more ships this year.</p>"
        "<figure><img src='img/boats.jpg' alt='boats'><figcaption>Fishing boats moored at the pier.</figcaption></figure>"
        "<p><img src='img/logo.png' alt='logo'></p>"
        "<h2>Streets</h2><p>Traffic near the port was heavy.</p>"
        "<img src='img/street.jpg' alt='A busy street next to the harbour at noon'>"
        "<img src='../outside.jpg' alt='escapes the folder'></body></html>", encoding="utf-8")
    (d / "notes.md").write_text("# 港口笔记\n\n今年港口的渔船数量明显增加。\n\n![渔船](img/boats.jpg)\n\n"
                                "图 5 停靠在码头的渔船\n", encoding="utf-8")
    (d / "plain.txt").write_text("Plain notes: the pier was rebuilt in 2019 after the storm.\n", encoding="utf-8")
    (tmp_path / "outside.jpg").write_bytes(photo(coco_images, 4))
    return d


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with ETag / If-None-Match (SimpleHTTPRequestHandler has only Last-Modified)."""

    hits: list[str]

    def log_message(self, *args):  # quiet
        pass

    @staticmethod
    def etag(path: str) -> str:
        return '"' + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] + '"'

    def end_headers(self):
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            self.send_header("ETag", self.etag(path))
        super().end_headers()

    def send_head(self):
        self.server.hits.append(self.path)
        if self.path.startswith("/slow"):
            import time
            time.sleep(2)
        path = self.translate_path(self.path)
        if os.path.isfile(path) and self.headers.get("If-None-Match"):
            if self.headers["If-None-Match"] == self.etag(path):
                self.send_response(304)
                self.end_headers()
                return None
        return super().send_head()


@pytest.fixture
def site(tmp_path, coco_images):
    """A real HTTP server on 127.0.0.1 serving: index.html (figure + links), about.html, report.pdf (linked),
    private/secret.html (robots.txt disallows it), big.bin. Yields (base_url, root, server)."""
    root = tmp_path / "site"
    (root / "private").mkdir(parents=True)
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n", encoding="utf-8")
    (root / "photo.jpg").write_bytes(photo(coco_images, 5))
    (root / "index.html").write_text(
        "<html><head><title>Port news</title></head><body><h1>Port news</h1>"
        "<p>The new crane lifts forty containers per hour.</p>"
        "<figure><img src='/photo.jpg'><figcaption>Figure 1: The new crane at the container terminal.</figcaption>"
        "</figure><a href='about.html'>about</a> <a href='report.pdf'>annual report</a> "
        "<a href='private/secret.html'>secret</a> <a href='https://elsewhere.example/x.html'>other site</a>"
        "</body></html>", encoding="utf-8")
    (root / "about.html").write_text("<html><body><h1>About</h1><p>We report on the port every week.</p>"
                                     "<a href='index.html'>home</a></body></html>", encoding="utf-8")
    (root / "private" / "secret.html").write_text("<p>secret</p>", encoding="utf-8")
    write_pdf(root / "report.pdf", [(EN_TEXT, [photo(coco_images, 6)])])
    (root / "big.bin").write_bytes(b"x" * 4096)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

    handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
    server = Server(("127.0.0.1", 0), handler)
    server.hits = []
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, server
    finally:
        server.shutdown()
        server.server_close()
