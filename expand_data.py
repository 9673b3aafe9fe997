#!/usr/bin/env python
"""Documents and web pages -> image-caption / Q&A training data (and the knowledge base), in one step.

    python expand_data.py --source reports/ --output data/expanded                       # document captions only
    python expand_data.py --source https://example.com/report.html --crawl-depth 1 --to kb --kb_dir multi_agent/knowledge_base
    python expand_data.py --source sources.txt --generator local --model ./qwen3-vl-4b-instruct \
        --to both --train_json data/train.json --kb_dir multi_agent/knowledge_base
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vlft.stages import expand
    return expand(argv)


if __name__ == "__main__":
    from vlft.cli import exit_now
    exit_now(main())  # no interpreter teardown once the work is saved (vlft.cli.exit_now)
