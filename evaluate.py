#!/usr/bin/env python
"""Caption the validation split with the base model and adapter(s); BLEU-1..4, ROUGE-L, CIDEr-D side by side.

    python evaluate.py --model ./qwen3-vl-4b-instruct --adapter output/Qwen3-VL-4Blora \
        --data_path output/data/val.json --output_dir output/eval
    python evaluate.py ... --judge local                                   # the base model grades 1-5
    python evaluate.py ... --judge-url http://localhost:8000/v1 --judge-model Qwen2.5-7B-Instruct

Writes report.md, report.json and predictions_<system>.jsonl to --output_dir and prints the Markdown.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vlft.stages import evaluate
    return evaluate(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
