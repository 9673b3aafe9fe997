"""Peak GPU memory of QLoRA training on the real Qwen3-VL-4B architecture (random weights), issue 3.

The training defaults of lora.py / MoeLORA.py (vlft.train.config.TrainConfig: batch, accumulation,
LoRA rank/alpha/dropout/targets, gradient checkpointing), 4-bit NF4 double quant with bf16
compute, the project's adapter registry (LoRA and MoE-LoRA), the project's collator
(images decoded per batch) and the project's Trainer subclass, for a few optimizer steps on
synthetic 280x280 caption samples. A failing project component fails the run: the numbers are
only worth recording for the shipped path.

  python -m bench.qlora_memory            # CUDA GPU
  python -m bench.qlora_memory --tiny     # CPU smoke run on the tiny model
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/qlora_memory.py`: the same as `python -m bench.qlora_memory`
    os.execve(sys.executable, [sys.executable, "-m", "bench.qlora_memory", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

from bench import common  # noqa: E402
from dataclasses import replace  # noqa: E402
from vlft.adapters.methods import get_method  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

LIMIT_GB = 8.0


def train_defaults(adapter: str, device: str) -> dict:
    """TrainConfig's defaults with the auto batch size / accumulation / LR resolved for ``device``
    by the run plan (vlft.train.plan), as lora.py / MoeLORA.py would for 128-token samples."""
    from vlft.train.config import MoeTrainConfig, TrainConfig
    from vlft.train.plan import make_plan
    cls = MoeTrainConfig if adapter == "moelora" else TrainConfig
    cfg = cls()
    plan = make_plan(cfg, device=device)
    return dict(src=f"vlft.train.config.{cls.__name__}", cfg=cfg, batch=plan.batch_size, accum=plan.accumulation,
                lr=plan.learning_rate, ckpt=cfg.gradient_checkpointing, ckpt_every=cfg.checkpoint_every,
                loss_impl=cfg.loss_impl, chunk=cfg.loss_chunk_size, r=cfg.lora_r, alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout, targets=cfg.lora_target_modules, max_len=cfg.model_max_length)


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
    """Normalized training samples (the data loader's format) with in-memory 280x280 images."""
    import random

    import numpy as np
    from PIL import Image

    from vlft.paths import DEFAULT_CAPTION_PROMPT

    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = Image.fromarray(nprng.integers(0, 256, (280, 280, 3), dtype=np.uint8))
        cap = " ".join(rng.choice(common.WORDS) for _ in range(16)).capitalize() + "."
        out.append({"id": f"syn-{i}", "messages": [
            {"role": "user", "content": [{"type": "image", "image": img},
                                         {"type": "text", "text": DEFAULT_CAPTION_PROMPT}]},
            {"role": "assistant", "content": [{"type": "text", "text": cap}]}]})
    return out


def spec_of(d: dict):
    from vlft.train.recipe import adapter_spec
    return replace(adapter_spec(d["cfg"]), targets=d["targets"], r=d["r"], alpha=d["alpha"], dropout=d["dropout"])


def attach(model, adapter: str, d: dict):
    return get_method(adapter).build(model, spec_of(d)), "vlft.adapters.methods"


def run_trainer(model, processor, records, d, adapter, device, steps) -> str:
    from transformers import TrainingArguments

    from vlft.train.collator import SftCollator
    from vlft.train.trainer import VlftTrainer

    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="qlora_mem_"), per_device_train_batch_size=d["batch"],
                             gradient_accumulation_steps=d["accum"], max_steps=steps, learning_rate=d["lr"],
                             logging_steps=1, save_strategy="no", report_to="none", bf16=bf16,
                             remove_unused_columns=False, use_cpu=device == "cpu", dataloader_num_workers=0)
    from vlft.train.plan import make_plan
    from vlft.train.recipe import setup_layers

    plan = make_plan(d["cfg"], device=device)  # the recipe's policy: compiled layers on CUDA with triton
    print(f"[{adapter}] {setup_layers(model, plan)}")
    graphs, pad = plan.cuda_graphs, plan.pad_to_multiple_of
    trainer = VlftTrainer(model=model, args=args, train_dataset=records,
                          data_collator=SftCollator(processor, d["max_len"], pad_to_multiple_of=pad),
                          hooks=get_method(adapter).training_hooks(model, spec_of(d)),
                          loss_impl=d["loss_impl"], loss_chunk_size=d["chunk"], cudagraphs=graphs)
    timer = StepTimer(device)
    trainer.add_callback(timer)
    trainer.train()
    d["_timing"] = timer.summary(d["batch"] * d["accum"])
    d["_losses"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return "vlft.train.trainer.VlftTrainer + SftCollator"


class StepTimer(TrainerCallback):
    """Trainer callback: wall time of each optimizer step (device synchronized), for samples/s
    after the warm-up steps (the first compile and CUDA-graph recording fall in those)."""

    def __init__(self, device: str, warm: int = 2):
        self.device, self.warm, self.times, self._t = device, warm, [], None

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kw):
        self._sync()
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self._sync()
        self.times.append(time.perf_counter() - self._t)

    def summary(self, samples_per_step: int) -> dict:
        timed = self.times[self.warm:]
        sps = samples_per_step * len(timed) / sum(timed) if timed else float("nan")
        return dict(step_s=[round(t, 4) for t in self.times], samples_per_s=sps, timed_steps=len(timed))


def measure(adapter: str, tiny: bool, steps: int, compile_mode: str = "default", batch: int = 0, accum: int = 0,
            dropout: float | None = None) -> dict:
    device = "cpu" if tiny else "cuda"
    torch._dynamo.reset()  # compiled layers of the previous adapter's model
    d = train_defaults(adapter, device)
    d.update({k: v for k, v in (("batch", batch), ("accum", accum)) if v})
    if dropout is not None:
        d["dropout"] = dropout
    d["cfg"] = d["cfg"].replace(compile_mode=compile_mode, per_device_train_batch_size=d["batch"],
                                gradient_accumulation_steps=d["accum"], lora_dropout=d["dropout"])
    processor = common.load_bench_processor()
    records = synthetic_records(max(16, d["batch"] * d["accum"]))
    common.reset_memory(device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = common.build_model(tiny=tiny, device=device, dtype=dtype)
    common.quantize_4bit_(model, compute_dtype=dtype)
    model, how_attached = attach(model, adapter, d)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    common.reset_memory(device)
    how = run_trainer(model, processor, records, d, adapter, device, steps)
    alloc, reserved = common.peak_memory_gb(device)
    # the trained adapter, flattened in fp32 on the CPU: compared across compile modes (--check)
    trained = torch.cat([p.detach().float().flatten().cpu() for _, p in sorted(
        (n, p) for n, p in model.named_parameters() if p.requires_grad)])
    ctx = float("nan")
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        ctx = ((total - free) - torch.cuda.memory_reserved()) / 2**30  # CUDA context + libraries
    return dict(adapter=adapter, compile_mode=compile_mode, defaults={k: v for k, v in d.items() if k[0] != "_" and k != "cfg"},
                attached_by=how_attached, trained_by=how, trainable_params=trainable, timing=d.get("_timing"),
                losses=d.get("_losses"), _trained=trained,
                peak_alloc_gb=alloc, peak_reserved_gb=reserved, cuda_context_gb=ctx,
                peak_device_gb=reserved + ctx, under_limit=bool(reserved + (ctx if ctx == ctx else 0) < LIMIT_GB))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--adapters", default="lora,moelora")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps")
    ap.add_argument("--compile_mode", default="default",
                    help="comma list of TrainConfig.compile_mode values (default, reduce-overhead = CUDA graphs); "
                         "with two or more, the trained adapters of each adapter type are compared across them")
    ap.add_argument("--batch", type=int, default=0, help="per-device batch (0: TrainConfig's auto value)")
    ap.add_argument("--accum", type=int, default=0, help="gradient accumulation (0: TrainConfig's auto value)")
    ap.add_argument("--dropout", type=float, default=None,
                    help="LoRA dropout (0 for --compile_mode comparisons: dropout masks differ between compiled graphs)")
    ap.add_argument("--out", default="bench/out/qlora_memory.json")
    args = ap.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("No CUDA device: use --tiny for the CPU smoke run.")
        return 2
    print(json.dumps(common.versions()))
    results = []
    modes = [m.strip() for m in args.compile_mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("default", "reduce-overhead")]
    if bad:
        ap.error(f"--compile_mode: {bad[0]!r} is not one of default, reduce-overhead")
    for adapter, mode in itertools.product(args.adapters.split(","), modes):
        r = measure(adapter, args.tiny, args.steps, mode, args.batch, args.accum, args.dropout)
        results.append(r)
        t = r["timing"] or {}
        print(f"[{adapter} {mode}] {t.get('samples_per_s', float('nan')):.2f} samples/s over {t.get('timed_steps')} "
              f"steps (step times {t.get('step_s')}), losses {r['losses']}")
        print(f"[{adapter}] {r['trained_by']}; batch {r['defaults']['batch']} x accum {r['defaults']['accum']}, "
              f"checkpointing {r['defaults']['ckpt']}: peak allocated {r['peak_alloc_gb']:.2f} GiB, "
              f"peak reserved {r['peak_reserved_gb']:.2f} GiB, + CUDA context {r['cuda_context_gb']:.2f} GiB "
              f"= {r['peak_device_gb']:.2f} GiB on the device ({'<' if r['under_limit'] else '>='} {LIMIT_GB} GB)",
              flush=True)
        common.reset_memory("cuda" if not args.tiny else "cpu")
    for adapter in args.adapters.split(","):  # same seed, data and steps: the modes must train the same adapter
        rs = [r for r in results if r["adapter"] == adapter]
        for other in rs[1:]:
            a, b = rs[0]["_trained"], other["_trained"]
            cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
            rel = float((a - b).norm() / a.norm().clamp_min(1e-12))
            print(f"[{adapter}] trained adapter, {other['compile_mode']} vs {rs[0]['compile_mode']}: "
                  f"cosine {cos:.6f}, relative difference {rel:.2e}")
            other["vs_first_mode"] = dict(cosine=cos, rel_diff=rel)
    for r in results:
        r.pop("_trained", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"versions": common.versions(), "results": results}, indent=1))
    return 0 if all(r["under_limit"] for r in results) or args.tiny else 1


if __name__ == "__main__":
    raise SystemExit(main())
