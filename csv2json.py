#!/usr/bin/env python
"""CSV (image_path,caption) -> training JSON/JSONL, with an optional per-image train/val split.

    python csv2json.py --csv ./coco_2014_caption/train.csv --json ./coco_2014_caption/train.json --top_k 500
    python csv2json.py --csv data/captions.csv --json data/train.jsonl --val-ratio 0.1 --seed 0   # + data/val.jsonl
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vlft.stages import csv2json
    return csv2json(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
