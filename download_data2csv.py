#!/usr/bin/env python
"""Collect image/caption pairs into an image_path,caption CSV (+ images folder + rejects CSV).

    python download_data2csv.py --output ./coco_2014_caption/train.csv                 # ModelScope (default)
    python download_data2csv.py --coco-json captions_val2017.json --images val2017/ --output data/captions.csv
    python download_data2csv.py --folder my_photos/ --output data/captions.csv      # sidecar .txt or captions.csv
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vlft.cli import BAD_INPUT, run_stage
    from vlft.data.collect import DownloadDataConfig, collect

    rc, result = run_stage(DownloadDataConfig, collect, argv)
    if rc:
        return rc
    if sum(result.skipped.values()):
        print(f"rejected rows are listed in {result.rejects}")
    print(result.summary())
    return 0 if result.written else BAD_INPUT  # every record was bad


if __name__ == "__main__":
    sys.exit(main())
