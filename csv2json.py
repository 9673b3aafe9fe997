#!/usr/bin/env python
"""CSV (image_path,caption) -> training JSON/JSONL, with an optional per-image train/val split.

    python csv2json.py --csv ./coco_2014_caption/train.csv --json ./coco_2014_caption/train.json --top_k 500
    python csv2json.py --csv data/captions.csv --json data/train.jsonl --val-ratio 0.1 --seed 0   # + data/val.jsonl
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vlft.config import parse_config
    from vlft.data.convert import Csv2JsonConfig, CsvError, csv_to_json
    from vlft.data.encoding import EncodingError
    from vlft.utils.logging import setup_logging

    cfg = parse_config(Csv2JsonConfig, argv)
    setup_logging(cfg.verbose)
    try:
        result = csv_to_json(cfg)
    except (CsvError, EncodingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0 if result.n_train else 1


if __name__ == "__main__":
    sys.exit(main())
