#!/usr/bin/env python
"""Ask a Qwen-VL model about images, or caption a split / folder in batches.

    python test.py --model ./qwen3-vl-4b-instruct --image ./image/demo.jpg --prompt "描述这张图片"
    python test.py --model ./qwen3-vl-4b-instruct --adapter output/Qwen3-VL-4Blora --image a.jpg --stream
    python test.py --model ./qwen3-vl-4b-instruct --image a.jpg --image b.jpg --prompt "What differs?"
    python test.py --model ./merged --data_path data/val.json --batch_size 8 --output predictions.jsonl
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vlft.stages import infer
    return infer(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
