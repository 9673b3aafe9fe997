#!/usr/bin/env python
"""Collect image/caption pairs into an image_path,caption CSV (+ images folder + rejects CSV).

    python download_data2csv.py --output ./coco_2014_caption/train.csv                 # ModelScope (default)
    python download_data2csv.py --coco-json captions_val2017.json --images val2017/ --output data/captions.csv
    python download_data2csv.py --folder my_photos/ --output data/captions.csv      # sidecar .txt or captions.csv
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vlft.stages import download_data
    return download_data(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
