"""bench/expand_generate.py on the CPU: the tiny model through expand_data's local generator at two batch
sizes, the same prompts each time (the GPU numbers in bench/RESULTS.md come from this script)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.slow  # builds the tiny model and a PDF, generates twice
def test_batched_and_one_at_a_time_generate_the_same_prompts(capsys):
    from bench.expand_generate import main

    assert main(["--tiny", "--batch_sizes", "1,4", "--pages", "1", "--max_new_tokens", "2"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"batch (\d+): (\d+) prompts \((\d+) failed\)", out)
    assert [r[0] for r in rows] == ["1", "4"]
    assert rows[0][1] == rows[1][1] and int(rows[0][1]) >= 2 and rows[0][2] == rows[1][2] == "0"
    assert "speed-up over batch 1: batch 4 " in out
