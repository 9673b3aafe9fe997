#!/usr/bin/env python
"""Caption the validation split with the base model and adapter(s); BLEU-1..4, ROUGE-L, CIDEr-D side by side.

    python evaluate.py --model ./qwen3-vl-4b-instruct --adapter output/Qwen3-VL-4Blora \
        --data_path output/data/val.json --output_dir output/eval
    python evaluate.py ... --judge local                                   # the base model grades 1-5
    python evaluate.py ... --judge-url http://localhost:8000/v1 --judge-model Qwen2.5-7B-Instruct

Writes report.md, report.json and predictions_<system>.jsonl to --output_dir and prints the Markdown.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vlft.cli import BAD_INPUT, run_stage
    from vlft.eval.run import EvalConfig, evaluate

    rc, report = run_stage(EvalConfig, evaluate, argv, errors=(ValueError,))
    if rc:
        return rc
    print(open(report["paths"]["markdown"], encoding="utf-8").read())
    print(f"report: {report['paths']['markdown']} (and report.json)")
    failed = [n for n, s in report["systems"].items() if s.get("error")]
    return BAD_INPUT if failed else 0  # an adapter that did not load: the others are scored, the run still fails


if __name__ == "__main__":
    sys.exit(main())
