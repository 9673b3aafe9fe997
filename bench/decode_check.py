"""One-off: what does fully decoding every image cost (csv2json --verify-images, a decode pre-pass)?

    OMP_NUM_THREADS=1 python bench/decode_check.py [--rows 100000] [--unique 20000] [--threads 1 2 4]

Times ``vlft.data.images.image_problem`` (full pixel decode, what --verify-images runs once per unique
image) on the COCO sample JPEGs, then extrapolates to ``--unique`` images (a 100k-row COCO CSV has
~20k unique images at 5 captions each) for 1..N threads (PIL releases the GIL while decoding).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlft.data.images import image_problem  # noqa: E402
from vlft.paths import COCO_SAMPLE_DIR  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--unique", type=int, default=20_000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    files = sorted((COCO_SAMPLE_DIR / "images").glob("*.jpg"))
    for f in files:                       # warm the page cache: measure decoding, not the disk
        f.read_bytes()
    per = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        for f in files:
            assert image_problem(f) is None
        per.append((time.perf_counter() - t) / len(files))
    ms = statistics.median(per) * 1e3
    print(f"{len(files)} COCO JPEGs, full decode: {ms:.2f} ms/image (median of {a.repeat} passes)")
    work = files * a.repeat
    for n in a.threads:
        t = time.perf_counter()
        with ThreadPoolExecutor(n) as ex:
            list(ex.map(image_problem, work))
        per_img = (time.perf_counter() - t) / len(work)
        print(f"threads={n}: {per_img * 1e3:.2f} ms/image -> {a.unique} unique images ({a.rows} rows): "
              f"{per_img * a.unique:.0f} s; every row decoded: {per_img * a.rows:.0f} s")


if __name__ == "__main__":
    main()
