"""The shipped training recipe end to end on the real Qwen3-VL-4B architecture (random weights).

What a user runs, as subprocesses: ``download_data2csv.py`` -> ``csv2json.py`` -> ``lora.py`` /
``MoeLORA.py`` with their defaults (4-bit NF4, auto batch, compiled layers on CUDA), one epoch with
an eval pass part-way, a checkpoint, a short last batch and the sample-prediction table. The data
is COCO-shaped: the bundled COCO sample's captions (355 human captions, 7-24 words) and its image
sizes (640x480, 427x640, ...), so batches come in several (batch, length) shapes, which is what
CUDA graphs (``--compile_mode reduce-overhead``) record once each. Prints, per run: peak memory
(allocated, reserved, + CUDA context), the batch shapes seen, samples/s overall and per step
after warm-up, losses, wall time.

  python -m bench.recipe_e2e --compile_mode reduce-overhead,default   # CUDA GPU
  python -m bench.recipe_e2e --tiny --epochs 0.1                       # CPU smoke run, tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/recipe_e2e.py`: the same as `python -m bench.recipe_e2e`
    os.execve(sys.executable, [sys.executable, "-m", "bench.recipe_e2e", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "data" / "coco_sample"
SCRIPTS = {"lora": "lora.py", "moelora": "MoeLORA.py"}


def model_dir(work: Path, tiny: bool) -> Path:
    """A random-weight Qwen3-VL folder (full size unless ``tiny``), built once per work dir."""
    target = work / ("tiny-qwen3-vl" if tiny else "qwen3-vl-4b-random")
    if not (target / "model.safetensors.index.json").is_file() and not (target / "model.safetensors").is_file():
        # in a child process: this one must hold no GPU memory while the runs measure theirs
        t = time.perf_counter()
        code = ("import sys, torch; from vlft.models.tiny import build_random_model; "
                "build_random_model(sys.argv[1], tiny=sys.argv[2] == '1', "
                "device='cuda' if torch.cuda.is_available() else 'cpu')")
        run([sys.executable, "-c", code, str(target), "1" if tiny else "0"], work / "build_model.log", 900)
        print(f"model: {target} built in {time.perf_counter() - t:.0f} s")
    return target


def coco_like(work: Path, pad_words: int = 0) -> tuple[Path, Path]:
    """(COCO JSON, image folder): the bundled COCO JSON with every image present: real files where
    bundled, else random pixels at the listed width x height (pixel values change neither speed nor
    memory). ``pad_words``: each caption gets 0..N extra words, for more distinct batch lengths."""
    import random

    import numpy as np
    from PIL import Image

    from bench.common import WORDS

    meta = json.loads((COCO / "captions_val2017_coco-mini.json").read_text(encoding="utf-8"))
    words = random.Random(0)
    for a in meta["annotations"]:
        a["caption"] += "".join(" " + words.choice(WORDS) for _ in range(words.randint(0, pad_words)))
    coco_json = work / "coco" / f"captions_pad{pad_words}.json"
    images = work / "coco" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for im in meta["images"]:
        dst = images / im["file_name"]
        if dst.is_file():
            continue
        src = COCO / "images" / im["file_name"]
        if src.is_file():
            dst.write_bytes(src.read_bytes())
        else:
            Image.fromarray(rng.integers(0, 256, (im["height"], im["width"], 3), dtype=np.uint8)).save(dst)
    coco_json.write_text(json.dumps(meta), encoding="utf-8")
    return coco_json, images


def run(cmd: list[str], log: Path, timeout: float) -> float:
    t = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, check=True)
    return time.perf_counter() - t


def prepare_data(work: Path, pad_words: int) -> tuple[Path, Path]:
    coco_json, images = coco_like(work, pad_words)
    csv, train = work / "coco" / f"captions_pad{pad_words}.csv", work / "coco" / f"train_pad{pad_words}.json"
    run([sys.executable, "download_data2csv.py", "--coco-json", str(coco_json),
         "--images", str(images), "--output", str(csv), "--image-dir", str(images), "--all-captions",
         "--max_samples", "100000"], work / "data2csv.log", 600)
    run([sys.executable, "csv2json.py", "--csv", str(csv), "--json", str(train), "--val-ratio", "0.1",
         "--seed", "0"], work / "csv2json.log", 600)
    return train, train.with_name(f"val_pad{pad_words}.json")


def steady_rate(history: list[dict], skip: int) -> float:
    """Median per-step samples/s after ``skip`` warm-up steps, leaving out the steps whose interval
    holds an eval pass or a checkpoint (the step after one) and the short last batch."""
    steps = [h for h in history if "samples_per_second" in h and "loss" in h]
    evals = {h["step"] for h in history if "eval_loss" in h}
    rates = [h["samples_per_second"] for h in steps[skip:-1] if h["step"] - 1 not in evals]
    return statistics.median(rates) if rates else float("nan")


def train_once(adapter: str, mode: str, model: Path, train: Path, val: Path, work: Path, args) -> dict:
    out = work / f"{adapter}-{mode}-pad{args.pad_words}"
    cmd = [sys.executable, SCRIPTS[adapter], "--model", str(model), "--train_json", str(train),
           "--eval_data_path", str(val), "--output_dir", str(out), "--num_train_epochs", str(args.epochs),
           "--logging_steps", "1", "--save_steps", str(args.save_steps), "--report_to", "none",
           *(["--compile_mode", mode] if mode != "auto" else []), "--num_sample_predictions", "2",
           "--max_new_tokens", "16",
           *args.extra.split()]
    wall = run(cmd, work / f"{adapter}-{mode}-pad{args.pad_words}.log", args.timeout)
    s = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    plan = s["plan"]  # the run's auto settings as resolved
    return dict(adapter=adapter, compile_mode=mode, resolved_mode=plan["compile_mode"],
                workers=plan["workers"], wall_s=round(wall, 1), steps=s["global_step"],
                batch=plan["batch_size"], accum=plan["accumulation"],
                shapes=s.get("train_batch_shapes"), samples_per_s=s["samples_per_second"],
                steady_samples_per_s=steady_rate(s["log_history"], args.warm),
                peak_alloc_gb=s.get("peak_gpu_mem_gb"), peak_reserved_gb=s.get("peak_gpu_reserved_gb"),
                context_gb=s.get("gpu_context_gb"), first_loss=s["first_loss"], final_loss=s["final_loss"],
                eval_loss=s["eval_loss"], n_train=s["data"]["train"]["n_kept"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/vlft_recipe_e2e", help="model, data and outputs (reused)")
    ap.add_argument("--tiny", action="store_true", help="the tiny model (CPU smoke run)")
    ap.add_argument("--adapters", default="lora,moelora")
    ap.add_argument("--compile_mode", default="auto",
                    help="comma list, run in this order (auto: the recipe's own choice, no flag)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--save_steps", type=int, default=8, help="eval + checkpoint every N steps")
    ap.add_argument("--pad_words", type=int, default=0,
                    help="add 0..N random words to each caption (more distinct batch lengths)")
    ap.add_argument("--warm", type=int, default=3, help="steps left out of the steady rate")
    ap.add_argument("--extra", default="", help="more flags for lora.py / MoeLORA.py")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of all runs (L M L M ...: drift shows)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default="bench/out/recipe_e2e.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("SWANLAB_MODE", "disabled")

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir(work, args.tiny)
    train, val = prepare_data(work, args.pad_words)
    rows = []
    runs = [(m, a, i) for i in range(args.repeat) for m in args.compile_mode.split(",")
            for a in args.adapters.split(",")]
    for mode, adapter, i in runs:
        tag = f"[{adapter} {mode} #{i + 1}]"
        try:
            rows.append(dict(train_once(adapter, mode, model, train, val, work, args), round=i + 1))
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            log = work / f"{adapter}-{mode}-pad{args.pad_words}.log"
            print(f"{tag} failed ({type(e).__name__}); last lines of {log}:")
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
            rows.append(dict(adapter=adapter, compile_mode=mode, round=i + 1, error=type(e).__name__))
            continue
        r = rows[-1]
        print(f"{tag} {r['resolved_mode']}, {r['workers']} workers: {r['steps']} steps of {r['batch']}x{r['accum']} ({r['n_train']} samples), "
              f"shapes {r['shapes']}; {r['samples_per_s']:.2f} samples/s overall, "
              f"{r['steady_samples_per_s']:.2f} per step after warm-up; peak {r['peak_alloc_gb'] or 0:.2f} "
              f"alloc / {r['peak_reserved_gb'] or 0:.2f} reserved GiB (+{r['context_gb'] or 0:.2f} context); "
              f"loss {r['first_loss']:.4f} -> {r['final_loss']:.4f}, eval {r['eval_loss']}; {r['wall_s']} s",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
