#!/usr/bin/env python
"""Data-expansion generation speed with the local model (not a test): prompts/s through expand_data's
pipeline (``--generator local``) at several ``--batch_size`` values, in one process, on the same
generated report (text chunks -> Q&A prompts, figures -> VQA prompts).

The model is loaded once, before any timing; each batch size runs into its own output folder (so the
generation cache never answers) and only the pipeline's generation phase is timed. With random weights
(``--model`` built by ``vlft.models.tiny.build_random_model``) no prompt stops early, so every row
generates exactly ``prompts x max_new_tokens`` tokens: the rows differ only in how they are batched.

    python -m bench.expand_generate --model /tmp/qwen3-vl-4b-random --batch_sizes 1,8 --pages 12   # GPU
    python -m bench.expand_generate --tiny --batch_sizes 1,8 --pages 2                              # CPU smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/expand_generate.py`: the same as `python -m bench.expand_generate`
    os.execve(sys.executable, [sys.executable, "-m", "bench.expand_generate", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})


def measure(report: Path, out: Path, gen, batch_size: int, max_new_tokens: int) -> dict:
    from vlft.data.expand import ExpandConfig, Expander

    gen.batch_size = batch_size
    cfg = ExpandConfig(source=[str(report)], output=out, generator="local", model=gen.model_dir,
                       batch_size=batch_size, max_new_tokens=max_new_tokens)
    res = Expander(cfg, generator=gen).collect()
    prompts, secs = res.generated + res.failed, res.seconds["generate"]
    return dict(batch_size=batch_size, prompts=prompts, failed=res.failed, seconds=secs,
                prompts_per_s=prompts / secs if secs else float("nan"),
                tokens_per_s=prompts * max_new_tokens / secs if secs else float("nan"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a Qwen-VL folder (default with --tiny: a freshly built tiny model)")
    ap.add_argument("--tiny", action="store_true", help="build and use the tiny random model (CPU smoke run)")
    ap.add_argument("--batch_sizes", default="1,8")
    ap.add_argument("--pages", type=int, default=12, help="pages of the generated report")
    ap.add_argument("--max_new_tokens", type=int, default=64)
    a = ap.parse_args(argv)

    import torch

    from bench.expand_extract import make_report
    from vlft.data.expand.generate import LocalGenerator

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = a.model
        if a.tiny and not model:
            from vlft.models.tiny import build_random_model
            model = str(build_random_model(tmp / "tiny", tiny=True))
        if not model:
            ap.error("--model or --tiny")
        report = make_report(tmp / "report.pdf", a.pages)
        gen = LocalGenerator(model, max_new_tokens=a.max_new_tokens)
        t = time.perf_counter()
        gen.vl  # load once, outside every timed row
        print(f"model {model} loaded in {time.perf_counter() - t:.1f} s on "
              f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}", flush=True)
        rows = []
        for b in (int(x) for x in a.batch_sizes.split(",")):
            r = measure(report, tmp / f"out{b}", gen, b, a.max_new_tokens)
            rows.append(r)
            print(f"batch {b}: {r['prompts']} prompts ({r['failed']} failed) in {r['seconds']:.1f} s: "
                  f"{r['prompts_per_s']:.2f} prompts/s, {r['tokens_per_s']:.0f} generated tokens/s", flush=True)
        base = rows[0]["prompts_per_s"]
        print("speed-up over batch " + str(rows[0]["batch_size"]) + ": "
              + ", ".join(f"batch {r['batch_size']} {r['prompts_per_s'] / base:.2f}x" for r in rows[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
