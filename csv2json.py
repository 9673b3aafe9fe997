#!/usr/bin/env python
"""CSV (image_path,caption) -> training JSON/JSONL, with an optional per-image train/val split.

    python csv2json.py --csv ./coco_2014_caption/train.csv --json ./coco_2014_caption/train.json --top_k 500
    python csv2json.py --csv data/captions.csv --json data/train.jsonl --val-ratio 0.1 --seed 0   # + data/val.jsonl
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vlft.cli import BAD_INPUT, run_stage
    from vlft.data.convert import Csv2JsonConfig, csv_to_json

    rc, result = run_stage(Csv2JsonConfig, csv_to_json, argv)
    if rc:
        return rc
    if result.rejects_path is not None:
        print(f"skipped rows are listed in {result.rejects_path}")
    print(result.summary())
    return 0 if result.n_train else BAD_INPUT  # every row was bad


if __name__ == "__main__":
    sys.exit(main())
