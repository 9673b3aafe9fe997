#!/usr/bin/env python
"""Data-expansion extraction speed on the CPU (not a test): pages/s through expand_data's pipeline
(--generator none: read, extract text and figures, hash and dedupe images, write outputs).

Two inputs: a generated report (reportlab; every page with text, a different COCO photo crop, a "Figure N:"
caption, every third page a Chinese one), and optionally real PDFs given with --pdf (e.g. the manuals in
/usr/share/doc). Wall and CPU (process) time are both printed: on a shared machine wall time mostly
measures the neighbours.

    OMP_NUM_THREADS=1 .venv/bin/python bench/expand_extract.py [--pages 60] [--pdf FILE ...]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/expand_extract.py`: the same as `python -m bench.expand_extract`
    os.execve(sys.executable, [sys.executable, "-m", "bench.expand_extract", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

from vlft.data.expand import ExpandConfig, Expander  # noqa: E402
from vlft.paths import COCO_SAMPLE_DIR  # noqa: E402

EN = ("The harbour survey counted cargo ships and fishing boats during the spring season. Container "
      "traffic grew by twelve percent compared with the previous year, and the new cranes lifted forty "
      "containers per hour. ")
ZH = "本报告统计了春季港口的货船和渔船数量，集装箱运输量比去年增长了百分之十二，新起重机每小时吊装四十个集装箱。"


def make_report(path: Path, pages: int) -> Path:
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    from PIL import Image

    photos = sorted((COCO_SAMPLE_DIR / "images").glob("*.jpg"))
    c = canvas.Canvas(str(path))
    for i in range(pages):
        zh = i % 3 == 2
        # A different picture per page: the 17 photos, each cropped differently on each pass.
        with Image.open(photos[i % len(photos)]) as im:
            w, h = im.size
            k = i // len(photos)
            box = [(0, 0, w, h), (0, 0, w // 2, h), (0, 0, w, h // 2), (w // 4, h // 4, 3 * w // 4, 3 * h // 4),
                   (w // 2, 0, w, h), (0, h // 2, w, h)][k % 6]
            buf = io.BytesIO()
            im.convert("RGB").crop(box).save(buf, format="JPEG", quality=85)
        c.drawImage(ImageReader(buf), 72, 600, width=240, height=180)
        c.setFont("STSong-Light" if zh else "Helvetica", 10)
        y = 570
        c.drawString(72, y, f"{i + 1} Section" if not zh else f"第{i + 1}节 港口")
        for k in range(25):
            y -= 14
            c.drawString(72, y, (ZH[:38] if zh else EN[(k * 7) % 60:(k * 7) % 60 + 90]))
        y -= 20
        c.drawString(72, y, f"图 {i + 1} 码头上的起重机" if zh else f"Figure {i + 1}: Cranes at the container terminal, view {i}.")
        c.showPage()
    c.save()
    return path


def measure(name: str, sources: list[str], out: Path) -> None:
    cfg = ExpandConfig(source=sources, output=out)
    wall, cpu = time.perf_counter(), time.process_time()
    rep = Expander(cfg).run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    r = rep.result
    print(f"{name}: {r.pages} pages, {r.figures} figures, {rep.written} samples in {wall:.2f} s wall "
          f"({r.pages / wall:.1f} pages/s), {cpu:.2f} s CPU ({r.pages / cpu:.1f} pages/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=60)
    ap.add_argument("--pdf", nargs="*", default=[], help="real PDFs to measure as well")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report = make_report(tmp / "report.pdf", a.pages)
        measure("generated report", [str(report)], tmp / "out1")
        if a.pdf:
            measure("real PDFs", a.pdf, tmp / "out2")


if __name__ == "__main__":
    main()
