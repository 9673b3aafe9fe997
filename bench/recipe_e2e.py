"""The shipped training recipe end to end on the real Qwen3-VL-4B architecture (random weights).

What a user runs, as subprocesses: ``download_data2csv.py`` -> ``csv2json.py`` -> ``lora.py`` /
``MoeLORA.py`` with their defaults (4-bit NF4, auto batch, compiled layers on CUDA), one epoch with
an eval pass part-way, a checkpoint, a short last batch and the sample-prediction table. The data
is COCO-shaped: the bundled COCO sample's captions (355 human captions, 7-24 words) and its image
sizes (640x480, 427x640, ...), so batches come in several (batch, length) shapes, which is what
CUDA graphs (``--compile_mode reduce-overhead``) record once each. Prints, per run: peak memory
(allocated, reserved, + CUDA context), the batch shapes seen, samples/s overall and per step
after warm-up, losses, wall time, and where the wall time went (the run's phase breakdown: load,
data, compile, train, eval, save, predict).

Time to a trained adapter against the seed project's own lora.py (issue 18): ``--seed-script PATH``
runs that script (../shared/baselines/seed_lora.py, copied into the checkout's ignored ``.device/`` on
a GPU machine, where ../shared is not sent) on the same training records and epochs, and
``--cache cold,warm`` runs every adapter with an empty compile cache folder, then again with the
folder as that run left it. The last line then reads
``time to adapter vs the seed's own lora.py: N× (cold), M× (warm); MoE-LoRA/LoRA wall: R``
(wall-time ratios of whole runs on the same records and epochs, i.e. ratios of sample-passes/s).

  python -m bench.recipe_e2e --compile_mode reduce-overhead,default   # CUDA GPU
  python -m bench.recipe_e2e --records 96 --epochs 2 --cache cold,warm --seed-script .device/seed_lora.py
  python -m bench.recipe_e2e --tiny --epochs 0.1                       # CPU smoke run, tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
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


def run(cmd: list[str], log: Path, timeout: float, env: dict | None = None, cwd: Path = ROOT) -> float:
    """Wall seconds of ``cmd``; its output goes to ``log``, each line stamped with the seconds since the
    start (the timeline shows what a run spends before its first line and after its last one)."""
    t = time.perf_counter()
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as f, subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, errors="replace") as p:
        killer = threading.Timer(timeout, p.kill)  # a run that hangs without printing is stopped too
        killer.start()
        try:
            for line in p.stdout:
                f.write(f"[{time.perf_counter() - t:7.2f}s] {line}")
            p.wait()
        finally:
            killer.cancel()
        f.write(f"[{time.perf_counter() - t:7.2f}s] (exited {p.returncode})\n")
    if p.returncode:
        raise subprocess.CalledProcessError(p.returncode, cmd)  # killed by the timer: a negative code
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


def subset(train: Path, records: int) -> Path:
    """The first ``records`` training records (0: all), in a file of their own; every row trains on it."""
    if records <= 0:
        return train
    rows = json.loads(train.read_text(encoding="utf-8"))
    if len(rows) < records:
        raise SystemExit(f"--records {records}: {train} holds only {len(rows)} training records")
    out = train.with_name(f"{train.stem}_first{records}.json")
    out.write_text(json.dumps(rows[:records], ensure_ascii=False), encoding="utf-8")
    return out


def seed_records(train: Path, val: Path) -> list[dict]:
    """The training records in the seed's format, plus 4 held-out ones last (the seed script keeps the
    last 4 records out of training): ``{"id", "conversations": [{"from": "user", "value": "COCO Yes:
    <|vision_start|>ABS_PATH<|vision_end|>"}, {"from": "assistant", "value": CAPTION}]}``."""
    from vlft.data.vocab import message_text
    from vlft.train.collator import sample_images

    def convert(s: dict) -> dict:
        image = (train.parent / sample_images(s)[0]).resolve()  # relative paths: to the JSON's folder
        caption = message_text([m for m in s["messages"] if m["role"] == "assistant"][-1])
        return {"id": s.get("id", ""), "conversations": [
            {"from": "user", "value": f"COCO Yes: <|vision_start|>{image}<|vision_end|>"},
            {"from": "assistant", "value": caption}]}

    held = json.loads(val.read_text(encoding="utf-8"))[:4]
    return [convert(s) for s in json.loads(train.read_text(encoding="utf-8")) + held]


def seed_once(script: Path, model: Path, train: Path, val: Path, work: Path, args) -> dict:
    """The seed project's own lora.py, as its README says to run it, on the same records and epochs."""
    if float(args.epochs) != int(args.epochs):
        raise SystemExit("--seed-script needs whole --epochs (the seed reads SEED_EPOCHS as an integer)")
    folder = work / "seed"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "qwen3-vl-4b-instruct").symlink_to(model.resolve(), target_is_directory=True)
    records = seed_records(train, val)
    (folder / "data_vl.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    shutil.copy(script, folder / "seed_lora.py")
    env = {**os.environ, "T0": f"{time.time():.6f}", "SEED_EPOCHS": str(int(args.epochs))}
    log = work / "seed.log"
    wall = run([sys.executable, "seed_lora.py"], log, args.timeout, env=env, cwd=folder)
    lines = [l.split("] ", 1)[-1] for l in log.read_text(errors="replace").splitlines()]  # without the time stamps
    done = [l.split() for l in lines if l.startswith("SEED_DONE")]
    return dict(adapter="seed", cache="", compile_mode="seed", wall_s=round(wall, 1),
                seed_done_s=float(done[-1][1]) if done else None, n_train=len(records) - 4,
                epochs=int(args.epochs))


def unsloth_once(path: Path, batch: int, model: Path, train: Path, work: Path, args) -> dict:
    """bench/unsloth_peer.py in its own process (Unsloth's pinned transformers on PYTHONPATH first),
    timed from outside like every other row; its own timings come from its UNSLOTH_RESULT line."""
    log = work / f"unsloth-b{batch}.log"
    env = {**os.environ, "PYTHONPATH": str(path), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / "unsloth_peer.py"), "--model", str(model), "--train_json", str(train),
           "--batch", str(batch), "--epochs", str(args.epochs), "--output_dir", str(work / f"unsloth-b{batch}")]
    try:
        wall = run(cmd, log, args.timeout, env=env)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        tail = [l for l in log.read_text(errors="replace").splitlines() if l.strip()][-3:] if log.is_file() else []
        return dict(adapter="unsloth", batch=batch, error=f"{type(e).__name__}: " + " | ".join(tail))
    lines = [l.split("] ", 1)[-1] for l in log.read_text(errors="replace").splitlines()]
    result = json.loads(next(l for l in reversed(lines) if l.startswith("UNSLOTH_RESULT "))[len("UNSLOTH_RESULT "):])
    return dict(result, adapter="unsloth", cache="", inner_wall_s=result["wall_s"], wall_s=round(wall, 1))


def ratio_line(rows: list[dict]) -> str:
    """The issue-18 line from one invocation's rows (n/a where a row is missing or failed)."""
    def wall(adapter: str, cache: str) -> float | None:
        walls = [r["wall_s"] for r in rows if r.get("adapter") == adapter and r.get("cache", "") == cache
                 and "error" not in r]
        return statistics.median(walls) if walls else None

    def fmt(x: float | None, unit: str = "×") -> str:
        return "n/a" if x is None else f"{x:.1f}{unit}" if unit else f"{x:.2f}"

    seed = wall("seed", "")
    vs = [seed / w if seed and w else None for w in (wall("lora", "cold"), wall("lora", "warm"))]
    caches = [c for c in ("warm", "cold", "") if wall("lora", c) and wall("moelora", c)]
    r = wall("moelora", caches[0]) / wall("lora", caches[0]) if caches else None
    line = (f"time to adapter vs the seed's own lora.py: {fmt(vs[0])} (cold), {fmt(vs[1])} (warm); "
            f"MoE-LoRA/LoRA wall: {fmt(r, '')}" + (f" ({caches[0] or 'default'} cache)" if caches else ""))
    peers = sorted((r["batch"], r["wall_s"]) for r in rows if r.get("adapter") == "unsloth" and "error" not in r)
    ours = wall("lora", "cold") or wall("lora", "")
    if peers and ours:
        line += "; Unsloth wall / lora.py wall: " + ", ".join(f"{w / ours:.2f} (batch {b})" for b, w in peers)
    return line


def steady_rate(history: list[dict], skip: int) -> float:
    """Median per-step samples/s after ``skip`` warm-up steps, leaving out the steps whose interval
    holds an eval pass or a checkpoint (the step after one) and the short last batch."""
    steps = [h for h in history if "samples_per_second" in h and "loss" in h]
    evals = {h["step"] for h in history if "eval_loss" in h}
    rates = [h["samples_per_second"] for h in steps[skip:-1] if h["step"] - 1 not in evals]
    return statistics.median(rates) if rates else float("nan")


def train_once(adapter: str, mode: str, model: Path, train: Path, val: Path, work: Path, args,
               cache: str = "") -> dict:
    """One lora.py / MoeLORA.py run; ``cache``: "cold" empties the compile cache folder first, "warm"
    keeps it, "" leaves the recipe's default folder alone."""
    tag = f"{adapter}-{mode}-pad{args.pad_words}" + (f"-{cache}" if cache else "")
    out = work / tag
    shutil.rmtree(out, ignore_errors=True)  # a checkpoint left by an earlier call would be resumed from
    cache_flags = []
    if cache:
        folder = work / "compile_cache"
        if cache == "cold":
            shutil.rmtree(folder, ignore_errors=True)
        cache_flags = ["--compile_cache_dir", str(folder)]
    cmd = [sys.executable, SCRIPTS[adapter], "--model", str(model), "--train_json", str(train),
           "--eval_data_path", str(val), "--output_dir", str(out), "--num_train_epochs", str(args.epochs),
           "--logging_steps", "1", "--save_steps", str(args.save_steps), "--report_to", "none",
           *(["--compile_mode", mode] if mode != "auto" else []), "--num_sample_predictions", "2",
           "--max_new_tokens", "16", *cache_flags,
           *args.extra.split()]
    wall = run(cmd, work / f"{tag}.log", args.timeout)
    s = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    plan = s["plan"]  # the run's auto settings as resolved
    return dict(adapter=adapter, cache=cache, compile_mode=mode, resolved_mode=plan["compile_mode"],
                compiled=plan["compile"], compile_decision=plan.get("compile_estimate") or plan.get("compile_off_reason"),
                phases=s.get("phases"), epochs=args.epochs,
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
    ap.add_argument("--records", type=int, default=0,
                    help="train every row on the first N training records (0: all; e.g. 96 with --seed-script)")
    ap.add_argument("--cache", default="",
                    help="comma list of compile-cache rounds: cold (empty folder before each run), warm (kept); "
                         "'' = the recipe's default folder, untouched")
    ap.add_argument("--seed-script", dest="seed_script", default=None,
                    help="the seed project's own lora.py (../shared/baselines/seed_lora.py; on a GPU machine a "
                         "copy inside the checkout, e.g. .device/seed_lora.py): timed on the same records/epochs")
    ap.add_argument("--unsloth-path", dest="unsloth_path", default=None,
                    help="a folder holding Unsloth and its dependencies (pip install --target): runs "
                         "bench/unsloth_peer.py with it on PYTHONPATH, on the same records/epochs (the peer)")
    ap.add_argument("--unsloth-batch", dest="unsloth_batch", default="24",
                    help="comma list of the peer's batch sizes (24 = lora.py's CUDA batch; larger = same memory)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default="bench/out/recipe_e2e.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("SWANLAB_MODE", "disabled")

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir(work, args.tiny)
    train, val = prepare_data(work, args.pad_words)
    train = subset(train, args.records)
    rows = []
    t_all = time.perf_counter()
    if args.seed_script:
        try:
            rows.append(seed_once(Path(args.seed_script), model, train, val, work, args))
            r = rows[-1]
            print(f"[seed's own lora.py] {r['n_train']} records x {r['epochs']} epochs: {r['wall_s']} s wall "
                  f"(SEED_DONE {r['seed_done_s']} s)", flush=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            log = work / "seed.log"
            print(f"[seed's own lora.py] failed ({type(e).__name__}: {e}); last lines of {log}:")
            if log.is_file():
                print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
            rows.append(dict(adapter="seed", cache="", error=type(e).__name__))
    runs = [(m, a, i, c) for i in range(args.repeat) for c in (args.cache.split(",") if args.cache else [""])
            for m in args.compile_mode.split(",") for a in args.adapters.split(",")]
    for mode, adapter, i, cache in runs:
        tag = f"[{adapter} {mode}{' ' + cache + ' cache' if cache else ''} #{i + 1}]"
        try:
            rows.append(dict(train_once(adapter, mode, model, train, val, work, args, cache), round=i + 1))
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            log = work / f"{adapter}-{mode}-pad{args.pad_words}{'-' + cache if cache else ''}.log"
            print(f"{tag} failed ({type(e).__name__}); last lines of {log}:")
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
            rows.append(dict(adapter=adapter, compile_mode=mode, cache=cache, round=i + 1, error=type(e).__name__))
            continue
        r = rows[-1]
        print(f"{tag} {r['resolved_mode']}, {r['workers']} workers: {r['steps']} steps of {r['batch']}x{r['accum']} ({r['n_train']} samples), "
              f"shapes {r['shapes']}; {r['samples_per_s']:.2f} samples/s overall, "
              f"{r['steady_samples_per_s']:.2f} per step after warm-up; peak {r['peak_alloc_gb'] or 0:.2f} "
              f"alloc / {r['peak_reserved_gb'] or 0:.2f} reserved GiB (+{r['context_gb'] or 0:.2f} context); "
              f"loss {r['first_loss']:.4f} -> {r['final_loss']:.4f}, eval {r['eval_loss']}; {r['wall_s']} s",
              flush=True)
        ph = r["phases"] or {}
        # the phases start at the process start ("startup"); what is left is the process ending
        outside = r["wall_s"] - ph.get("total", 0.0)
        print(f"{tag} {'compiled' if r['compiled'] else 'eager'}{' (' + r['compile_decision'] + ')' if r['compile_decision'] else ''}; phases: "
              + ", ".join(f"{k} {v:.1f}" for k, v in ph.items()) + f" s, + {outside:.1f} s after the summary (exit)", flush=True)
    for batch in (args.unsloth_batch.split(",") if args.unsloth_path else []):
        rows.append(unsloth_once(Path(args.unsloth_path), int(batch), model, train, work, args))
        r = rows[-1]
        print(f"[Unsloth FastVisionModel, batch {batch}] " + (f"{r['wall_s']} s wall: " + ", ".join(
            f"{k} {r[k]}" for k in ("imports_s", "load_s", "first_step_s", "train_s", "steady_samples_per_s",
                                    "peak_reserved_gb", "final_loss")) if "error" not in r else f"failed: {r['error']}"),
              flush=True)
    print(f"all runs: {time.perf_counter() - t_all:.0f} s")
    if args.seed_script or args.cache:
        print(ratio_line(rows), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
