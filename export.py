#!/usr/bin/env python
"""Merge a LoRA / DoRA / IA3 adapter into its base (16-bit) and save a folder transformers and vLLM load.

    python export.py --model ./qwen3-vl-4b-instruct --adapter output/Qwen3-VL-4Blora --output output/merged
    python test.py --model output/merged --image ./image/demo.jpg        # no --adapter needed any more
    vllm serve output/merged

MoE-LoRA adapters are refused (their routing depends on each token): keep using them with --adapter.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vlft.stages import export
    return export(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
