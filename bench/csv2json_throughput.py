#!/usr/bin/env python
"""csv2json throughput on a synthetic 100k-row CSV (not a test).

Shape: COCO-like, 5 captions per image -> 20k unique images. Each image is a hard link to one of
the bundled COCO JPEGs, so the existence check really stats 20k distinct directory entries while
the disk holds only the 17 real files. csv2json stats each unique image once (cached per path) and
never decodes it (download_data2csv already did), so its cost grows with unique images, not rows.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.csv2json_throughput [--rows 100000] [--captions-per-image 5]

Wall and CPU (process) time are both printed: on a shared machine wall time mostly measures the
neighbours; CPU time is what the conversion itself costs.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/csv2json_throughput.py`: the same as `python -m bench.csv2json_throughput`
    os.execve(sys.executable, [sys.executable, "-m", "bench.csv2json_throughput", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

from vlft.data import load_samples  # noqa: E402
from vlft.data.convert import Csv2JsonConfig, csv_to_json  # noqa: E402
from vlft.paths import COCO_SAMPLE_DIR  # noqa: E402


def make_csv(root: Path, rows: int, per_image: int) -> Path:
    real = sorted((COCO_SAMPLE_DIR / "images").glob("*.jpg"))
    img_dir = root / "images"
    img_dir.mkdir()
    n_images = -(-rows // per_image)
    for i in range(n_images):
        os.link(real[i % len(real)], img_dir / f"{i:07d}.jpg")
    path = root / "captions.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "caption"])
        for r in range(rows):
            w.writerow([f"images/{r // per_image:07d}.jpg", f"A synthetic caption number {r} about a photo, 一张照片。"])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--captions-per-image", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        csv_path = make_csv(root, args.rows, args.captions_per_image)
        print(f"setup: {args.rows} rows, {-(-args.rows // args.captions_per_image)} unique images "
              f"({time.perf_counter() - t0:.1f} s)")
        for fmt, ext, check in [("messages", ".jsonl", True), ("messages", ".json", True),
                                ("conversations", ".jsonl", True), ("messages", ".jsonl", False)]:
            out = root / f"train{ext}"
            t0, c0 = time.perf_counter(), time.process_time()
            res = csv_to_json(Csv2JsonConfig(csv=str(csv_path), json=str(out), format=fmt, val_ratio=0.05,
                                             seed=0, check_images=check, verify_images=False))
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert res.n_train + sum(len(s.get("references", [])) for s in load_samples(res.val_path, check_images=False)) \
                == args.rows
            print(f"csv2json format={fmt:13s} out={ext:6s} check_images={check!s:5s}: wall {dt:6.2f} s "
                  f"= {args.rows / dt:7,.0f} rows/s; CPU {cpu:6.2f} s = {args.rows / cpu:7,.0f} rows/s "
                  f"({out.stat().st_size / 1e6:.0f} MB)")
        t0, c0 = time.perf_counter(), time.process_time()
        n = len(load_samples(root / "train.jsonl"))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"load_samples (messages jsonl, check_images=True): {n} samples; wall {dt:.2f} s = "
              f"{n / dt:,.0f}/s; CPU {cpu:.2f} s = {n / cpu:,.0f}/s")


if __name__ == "__main__":
    main()
