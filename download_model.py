#!/usr/bin/env python
"""Download Qwen3-VL-4B-Instruct (or any Qwen-VL id) from ModelScope / Hugging Face, or build the tiny
offline model.

    python download_model.py --target ./qwen3-vl-4b-instruct            # ModelScope (default)
    python download_model.py --source hf --model Qwen/Qwen2.5-VL-3B-Instruct --target ./qwen2.5-vl-3b
    python download_model.py --tiny --target output/tiny-qwen3-vl       # offline, seconds
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vlft.stages import download_model
    return download_model(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
