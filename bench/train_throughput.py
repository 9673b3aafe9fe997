"""Training throughput and memory of Qwen3-VL-4B (real architecture, random weights), issue 8.

Every setting runs in this one process, one after another, each on a freshly built model:
  (a) seed stack: 4-bit NF4 double quant, fp16 autocast + GradScaler, peft LoRA r=8 q/k/v/o,
      gradient checkpointing on every layer (vision too), full-vocabulary HF loss, batch 1 x accum 8.
      A hand-written loop equivalent to the HF Trainer step (autocast, scaled backward, unscale,
      clip 1.0, AdamW, zero_grad); not the Trainer itself.
  (b) 8 GB profile: 4-bit, bf16, same LoRA, fast path (labelled-token loss, precomputed
      positions, frozen vision without autograd, selective checkpointing, larger micro-batch);
      candidates swept, the fastest with peak reserved <= --mem_limit_gb wins.
  (c) bf16 unquantized, same LoRA, fast path, no checkpointing, large micro-batches.
  (d) MoE-LoRA (4 experts, top-2, vlft.tuners.moelora) against LoRA at (b)'s winning setting.

Data: synthetic COCO-like samples preprocessed once (280x280 random images -> 81 image tokens,
~20-token captions) and kept on the GPU, so the input pipeline never stalls a step.

  python -m bench.train_throughput                 # on a CUDA GPU, all settings
  python -m bench.train_throughput --tiny          # CPU smoke run on the tiny model
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/train_throughput.py`: the same as `python -m bench.train_throughput`
    os.execve(sys.executable, [sys.executable, "-m", "bench.train_throughput", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

from bench import common  # noqa: E402  (sets PYTORCH_CUDA_ALLOC_CONF before torch touches CUDA)
import torch  # noqa: E402
from torch.profiler import record_function  # noqa: E402

from bench.lab import packing  # noqa: E402
from vlft.train import fast  # noqa: E402

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


@dataclass
class Setting:
    name: str
    group: str                 # "a" | "b" | "c" | "d": which question it answers
    quant: str = "4bit"        # "4bit" | "none"
    dtype: str = "bf16"        # weights/compute: "fp16" | "bf16" ("fp32" forced on CPU)
    adapter: str = "lora"      # "lora" | "moelora"
    micro_batch: int = 1
    accum: int = 8
    ckpt_every: int = 1        # checkpoint every n-th decoder layer; 0 = off
    loss: str = "fast"         # "plain": model(**batch).loss (full logits); "fast": fast.lm_loss
    pack_tokens: int | None = None  # pack into rows of this many tokens; None = padded batch
    warmup: int = 2            # optimizer steps
    steps: int = 4             # timed optimizer steps
    chunk: int = 1024          # labelled tokens per logits chunk (fast loss)
    compile: bool = False      # torch.compile each language-model decoder layer (inductor)
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" replays the layers as CUDA graphs
    pad_multiple: int = 1      # pad sequence length to a multiple (static shapes for compile)
    moe_stats_every: int = 10  # MoE-LoRA: routing statistics on every n-th forward only (the Trainer: logged steps, every 10)
    moe_aux_in_backward: bool = True  # MoE-LoRA: router-loss gradient in each layer's backward (shipped); False = old sum at the end
    mem_budget: float | None = None  # compile: torch._functorch activation_memory_budget (0 = recompute all)
    profile: bool = False      # also profile one optimizer step (torch.profiler), table under --out's folder

    @property
    def build_key(self):
        return (self.quant, self.dtype, self.adapter)


def default_settings(tiny: bool, plan: str = "measured") -> list[Setting]:
    """``measured``: the settings of the run in bench/RESULTS.md. ``next``: experiments written
    but not yet run on a GPU (compiled 4-bit with the partitioner recomputing, batch 56)."""
    seed = Setting("a_seed_4bit_fp16_mb1x8_ckpt_fullloss", "a", dtype="fp16", micro_batch=1, accum=8,
                   ckpt_every=1, loss="plain", warmup=1, steps=3)
    cb = dict(compile=True, pad_multiple=32, warmup=3)
    if plan == "measured":
        b = [Setting("b_4bit_mb32_ckpt1_chunk1024", "b", micro_batch=32, accum=1, ckpt_every=1, chunk=1024),
             Setting("b_4bit_mb48_ckpt1", "b", micro_batch=48, accum=1, ckpt_every=1, chunk=256),
             Setting("b_4bit_mb64_ckpt1", "b", micro_batch=64, accum=1, ckpt_every=1, chunk=256, profile=True)]
        c = [Setting("c_bf16_mb64_ckpt0", "c", quant="none", micro_batch=64, accum=1, ckpt_every=0, chunk=256,
                     profile=True),
             Setting("c_bf16_mb96_ckpt4", "c", quant="none", micro_batch=96, accum=1, ckpt_every=4, chunk=256)]
        compiled = [replace(b[2], name="b_4bit_mb64_ckpt1_compile", profile=False, **cb),
                    replace(c[0], name="c_bf16_mb64_ckpt0_compile", profile=False, **cb)]
    elif plan == "next":
        b = [Setting("b_4bit_mb48_ckpt1", "b", micro_batch=48, accum=1, ckpt_every=1, chunk=256),
             Setting("b_4bit_mb56_ckpt1", "b", micro_batch=56, accum=1, ckpt_every=1, chunk=256)]
        c = [Setting("c_bf16_mb64_ckpt0", "c", quant="none", micro_batch=64, accum=1, ckpt_every=0, chunk=256)]
        compiled = [Setting("b_4bit_mb64_compile_budget0", "b", micro_batch=64, accum=1, ckpt_every=0, chunk=256,
                            mem_budget=0.0, **cb),
                    Setting("b_4bit_mb64_ckpt1_compile_budget0", "b", micro_batch=64, accum=1, ckpt_every=1,
                            chunk=256, mem_budget=0.0, **cb),
                    Setting("c_bf16_mb64_ckpt0_compile", "c", quant="none", micro_batch=64, accum=1, ckpt_every=0,
                            chunk=256, **cb)]
    elif plan == "compiled":  # compiled decoder layers, the partitioner recomputing instead of checkpointing
        b = [Setting("b_4bit_mb32_ckpt1_chunk1024", "b", micro_batch=32, accum=1, ckpt_every=1, chunk=1024),
             Setting("b_4bit_mb32_compile_budget0", "b", micro_batch=32, accum=1, ckpt_every=0, chunk=1024,
                     mem_budget=0.0, **cb),
             Setting("b_4bit_mb48_compile_budget0", "b", micro_batch=48, accum=1, ckpt_every=0, chunk=1024,
                     mem_budget=0.0, **cb),
             Setting("b_4bit_mb32_compile_budget0_cudagraphs", "b", micro_batch=32, accum=1, ckpt_every=0,
                     chunk=1024, mem_budget=0.0, compile_mode="reduce-overhead", **cb),
             Setting("b_4bit_mb24_compile_budget0_cudagraphs", "b", micro_batch=24, accum=1, ckpt_every=0,
                     chunk=1024, mem_budget=0.0, compile_mode="reduce-overhead", **cb)]
        c, compiled = [], []
    elif plan == "shipped":  # lora.py's CUDA default for (b) and (d), (c) with the same compiled layers
        b = [Setting("b_4bit_mb24_compile_budget0_cudagraphs", "b", micro_batch=24, accum=1, ckpt_every=0,
                     chunk=1024, mem_budget=0.0, compile_mode="reduce-overhead", **cb)]
        # (c) has the memory to keep activations (budget 1), so nothing is recomputed
        c = [Setting("c_bf16_mb64_ckpt0_compile", "c", quant="none", micro_batch=64, accum=1, ckpt_every=0,
                     chunk=256, **cb),
             Setting("c_bf16_mb64_ckpt0_compile_cudagraphs", "c", quant="none", micro_batch=64, accum=1,
                     ckpt_every=0, chunk=256, compile_mode="reduce-overhead", **cb)]
        compiled = []
    else:
        raise ValueError(f"plan: {plan!r} is not one of measured, next, compiled, shipped")
    if tiny:  # keep the CPU smoke run short
        seed = replace(seed, accum=2, steps=1)
        small = dict(micro_batch=4, warmup=2, steps=1)
        b = [replace(b[0], **small)] + [replace(x, **small, **({} if x.compile else dict(pack_tokens=256,
                                                                                         profile=True)))
                                        for x in b[1:2]]
        c = [replace(x, **small, profile=False) for x in c[:1]]
        compiled = [replace(x, **small) for x in compiled[:1]]
    return [seed, *b, *c, *compiled]


def d_variants(b_best: Setting, auxsummed: bool = False, stats_every: int = 0) -> list[Setting]:
    """MoE-LoRA at (b)'s winning setting (compiled layers if it won; router-loss gradient inside
    each layer's backward, as shipped), and with ``auxsummed`` the pre-fix behaviour (aux loss
    summed at the end: all checkpointed layers recomputed at once)."""
    base = replace(b_best, group="d", adapter="moelora")
    stem = b_best.name.replace("b_", "d_moelora_", 1)
    out = [replace(base, name=stem)]
    if stats_every:
        out.append(replace(base, name=f"{stem}_stats{stats_every}", moe_stats_every=stats_every))
    if auxsummed:
        out.append(replace(base, name=stem + "_auxsummed", moe_aux_in_backward=False, profile=False))
    return out


# ---------------------------------------------------------------- model + adapters

def attach_lora(model):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=LORA_TARGETS, bias="none")
    return get_peft_model(model, cfg)


def attach_moelora(model):
    """The project's MoE-LoRA (4 experts, top-2) on the same targets; None if not available."""
    try:
        from vlft.tuners import moelora
    except Exception as e:  # noqa: BLE001
        print(f"[d] vlft.tuners.moelora not importable: {type(e).__name__}: {e}")
        return None, None
    import dataclasses as dc

    fields = {f.name for f in dc.fields(moelora.MoeLoraConfig)}
    want = dict(num_experts=4, top_k=2, r=8, lora_alpha=16, lora_dropout=0.05, target_modules=LORA_TARGETS,
                router_aux_loss_coef=0.01)
    kwargs = {k: v for k, v in want.items() if k in fields}
    model = moelora.apply_moelora(model, moelora.MoeLoraConfig(**kwargs)) or model
    return model, getattr(moelora, "moelora_aux_loss", None)


def build(setting: Setting, device: str, tiny: bool):
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[setting.dtype] if device != "cpu" else torch.float32
    model = common.build_model(tiny=tiny, device=device, dtype=dtype)
    if setting.quant == "4bit":
        common.quantize_4bit_(model, compute_dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    aux = None
    if setting.adapter == "lora":
        model = attach_lora(model)
    else:
        model, aux = attach_moelora(model)
        if model is None:
            return None, None, dtype
    return model, aux, dtype


# ---------------------------------------------------------------- batches + steps

def make_batches(samples, setting: Setting, pad_id: int, device: str, n_batches: int):
    cyc = itertools.cycle(samples)
    out = []
    for _ in range(n_batches):
        group = [next(cyc) for _ in range(setting.micro_batch)]
        if setting.loss == "plain":  # what an HF collator gives: positions computed by the model each step
            b = packing.collate_padded(group, pad_id, pad_to_multiple=setting.pad_multiple)
            b.pop("position_ids", None)
            b["mm_token_type_ids"] = (b["input_ids"] == IMAGE_TOKEN_ID).int()
        elif setting.pack_tokens:
            b = packing.pack_batch(group, pad_id, max_tokens=setting.pack_tokens, pad_to_multiple=setting.pad_multiple)
        else:
            b = packing.collate_padded(group, pad_id, pad_to_multiple=setting.pad_multiple)
        b["_samples"] = len(group)
        b["_tokens"] = sum(s["input_ids"].numel() for s in group)
        out.append(packing.to_device(b, device))
    return out


def loss_fn(setting: Setting, model, batch, aux_fn):
    inputs = {k: v for k, v in batch.items() if not k.startswith("_")}
    if setting.loss == "plain":
        loss = model(**inputs, use_cache=False).loss
    else:
        loss = fast.lm_loss(model, inputs, chunk_size=setting.chunk)
    aux = aux_fn(model) if aux_fn is not None else None
    if aux is not None:  # None: the tuner recorded nothing (in-backward aux, not a statistics forward)
        loss = loss + 0.01 * aux
    return loss


class Runner:
    """One setting on its model, set up (checkpointing or compiled layers, optimizer, batches) and
    warmed up, so that timed windows can be taken from it, also alternating with another Runner."""

    def __init__(self, setting: Setting, model, aux_fn, dtype, samples, pad_id, device, reset_dynamo=True):
        self.setting, self.model, self.aux_fn, self.device = setting, model, aux_fn, device
        if setting.ckpt_every and setting.loss == "plain":
            # the seed: HF checkpointing everywhere (vision blocks too), reentrant + input grads
            model.enable_input_require_grads()
            fast.unwrap_causal_lm(model).gradient_checkpointing_enable()
        else:
            fast.set_checkpointing(model, setting.ckpt_every)
        model.train()
        if setting.adapter == "moelora":
            configure_moelora(model, setting)
        if setting.compile and reset_dynamo:
            torch._dynamo.reset()  # drop graphs (and the models they guard on) of earlier settings
        self.compiled = fast.compile_decoder_layers(
            model, 1.0 if setting.mem_budget is None else setting.mem_budget,
            None if setting.compile_mode == "default" else setting.compile_mode) if setting.compile else 0
        self.graphs = setting.compile and setting.compile_mode == "reduce-overhead"
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, fused=device.startswith("cuda"))
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        n_micro = (setting.warmup + setting.steps) * setting.accum
        self.it = itertools.cycle(make_batches(samples, setting, pad_id, device, min(n_micro, 16)))
        self.autocast = (torch.autocast(device_type="cuda", dtype=dtype) if device != "cpu"
                         else torch.autocast("cpu", enabled=False))
        self.loss = None

    def opt_step(self):
        st, n_s, n_t = self.setting, 0, 0
        for _ in range(st.accum):
            b = next(self.it)
            if self.graphs:  # a new iteration: the previous one's graph outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            with self.autocast, record_function("step/fwd"):
                loss = loss_fn(st, self.model, b, self.aux_fn) / st.accum
            with record_function("step/bwd"):
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            n_s += b["_samples"]
            n_t += b["_tokens"]
            self.loss = loss
        with record_function("step/optim"):
            if self.scaler:
                self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            if self.scaler:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return n_s, n_t

    def warm_up(self) -> float:
        st, t0 = self.setting, time.perf_counter()
        moe = st.adapter == "moelora"
        for _ in range(max(st.warmup, -(-4 // st.accum) if moe else 0)):  # MoE: >= 4 forwards
            self.opt_step()
        if moe:
            after_warmup(self.model, st)
        return time.perf_counter() - t0

    def window(self, steps: int, timer) -> tuple[float, float, float]:
        """(samples/s, tokens/s, seconds) over ``steps`` optimizer steps."""
        n_s = n_t = 0
        with timer.region() as r:
            for _ in range(steps):
                s, t = self.opt_step()
                n_s += s
                n_t += t
        return n_s / r["s"], n_t / r["s"], r["s"]

    def close(self) -> None:
        if self.compiled:
            fast.uncompile_decoder_layers(self.model)
        self.opt = self.it = None


def cudagraph_skips() -> int:
    """CUDA graphs silently fall back to eager when a graph is skipped or re-recorded too often."""
    from torch._dynamo.utils import counters
    return sum(counters["inductor"][k] for k in list(counters["inductor"]) if "cudagraph_skip" in k)


def run_setting(setting: Setting, model, aux_fn, dtype, samples, pad_id, device, flops_per_sample):
    run = Runner(setting, model, aux_fn, dtype, samples, pad_id, device)
    common.reset_memory(device)
    timer = common.CudaTimer(device)
    warm_s = run.warm_up()
    sps, tps, secs = run.window(setting.steps, timer)
    alloc, reserved = common.peak_memory_gb(device)
    if run.graphs:
        print(f"[{setting.name}] cudagraph skips so far in this process: {cudagraph_skips()}")
    prof = profile_step(run.opt_step, setting, device) if setting.profile else {}
    res = dict(name=setting.name, group=setting.group, samples_per_s=sps, tokens_per_s=tps,
               peak_alloc_gb=alloc, peak_reserved_gb=reserved,
               mfu=sps * flops_per_sample / (common.H100_BF16_DENSE_TFLOPS * 1e12),
               loss=float(run.loss.detach()) * setting.accum, timed_s=secs, warmup_s=warm_s,
               trainable_params=sum(p.numel() for p in run.params), setting=asdict(setting),
               **prof)
    run.close()
    return res


def interleaved_d(best: Setting, rounds: int, device, tiny, samples, pad_id) -> dict:
    """LoRA and MoE-LoRA at ``best``, both models resident and warmed up, timed in alternating
    windows (L M L M ...): a drift of the machine over the run (clocks, host load) falls on both,
    which back-to-back separate runs do not guarantee (bench/RESULTS.md shows such a drift)."""
    runners, timer = [], common.CudaTimer(device)
    torch._dynamo.reset()
    for st in (best, d_variants(best)[0]):
        model, aux, dtype = build(st, device, tiny)
        run = Runner(st, model, aux, dtype, samples, pad_id, device, reset_dynamo=False)
        run.warm_up()
        runners.append(run)
    for run in runners:  # once more after both exist: graphs/allocations of the other model settled
        run.window(1, timer)
    sps: dict[str, list[float]] = {"lora": [], "moelora": []}
    for _ in range(rounds):
        for run in runners:
            sps[run.setting.adapter].append(run.window(best.steps, timer)[0])
    skips = cudagraph_skips() if runners[0].graphs else 0
    for run in runners:
        run.close()
    pairs = [m / l for l, m in zip(sps["lora"], sps["moelora"])]
    med = statistics.median(pairs)
    return dict(name=f"d_interleaved_{best.name}", setting=best.name, rounds=rounds, steps_per_window=best.steps,
                lora_samples_per_s=sps["lora"], moelora_samples_per_s=sps["moelora"], ratios=pairs,
                median_ratio=med, total_ratio=sum(sps["moelora"]) / sum(sps["lora"]), cudagraph_skips=skips)


def fmt_interleaved(r: dict) -> str:
    w = ", ".join(f"{l:.1f}/{m:.1f}" for l, m in zip(r["lora_samples_per_s"], r["moelora_samples_per_s"]))
    return (f"(d) interleaved at {r['setting']}, {r['rounds']} rounds x {r['steps_per_window']} steps, "
            f"LoRA/MoE-LoRA samples/s per round: {w}; MoE-LoRA vs LoRA median {100 * (r['median_ratio'] - 1):+.1f}%, "
            f"min {100 * (min(r['ratios']) - 1):+.1f}%, max {100 * (max(r['ratios']) - 1):+.1f}%, "
            f"all windows {100 * (r['total_ratio'] - 1):+.1f}% (cudagraph skips {r['cudagraph_skips']})")


def configure_moelora(model, setting: Setting) -> None:
    """The tuner's in-backward aux gradient (coef 0.01, scaled like the loss: / accum), or off, in which
    case loss_fn's ``0.01 * aux`` carries the gradient (the model is shared by both (d) rows)."""
    from vlft.tuners.moelora import routing_contexts, set_moelora_aux, set_moelora_stats

    set_moelora_aux(model, coef=0.01 if setting.moe_aux_in_backward else 0.0, grad_scale=1.0 / setting.accum)
    # warmup: statistics on every 2nd forward, so that both graph variants (with and without the
    # readout) compile, and under CUDA graphs are also recorded, before the timed steps
    set_moelora_stats(model, every=2)
    for ctx in routing_contexts(model):
        ctx.forward_count = 0


def after_warmup(model, setting: Setting) -> None:
    """MoE-LoRA: from here on statistics on every ``moe_stats_every``-th forward, like the Trainer."""
    from vlft.tuners.moelora import routing_contexts, set_moelora_stats

    set_moelora_stats(model, every=setting.moe_stats_every)
    for ctx in routing_contexts(model):
        ctx.forward_count = 0


def profile_step(opt_step, setting: Setting, device: str) -> dict:
    """One optimizer step under torch.profiler: GPU busy fraction and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        opt_step()
        if device == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    device_rows = [e for e in events if getattr(e, "self_device_time_total", 0) > 0 and not common.is_range_mirror(e)]
    dev_us = sum(e.self_device_time_total for e in device_rows)
    n_kernels = sum(e.count for e in device_rows)
    table = events.table(sort_by="self_device_time_total" if device == "cuda" else "self_cpu_time_total",
                         row_limit=-1, max_name_column_width=90)
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    stem = setting.name.replace('#', '_r')
    (PROFILE_DIR / f"prof_{stem}.txt").write_text(table)
    if device == "cuda":  # the step is host-bound: where the CPU time goes, and where the GPU waits
        idle = common.gpu_idle_by_phase(prof.events())
        print(f"[profile {setting.name}] {idle}")
        (PROFILE_DIR / f"prof_cpu_{stem}.txt").write_text(
            idle + "\n\n" + events.table(sort_by="self_cpu_time_total", row_limit=40))
    print(f"[profile {setting.name}] wall {wall:.3f}s (profiled), GPU busy {dev_us / 1e6:.3f}s "
          f"({100 * dev_us / 1e6 / wall:.0f}%), device ops {n_kernels}")
    return dict(profile_wall_s=wall, profile_gpu_busy_s=dev_us / 1e6, profile_device_ops=n_kernels)


PROFILE_DIR = Path("bench/out")


def fmt(r: dict) -> str:
    if "error" in r:
        return f"| {r['name']} | failed: {r['error'][:80]} |||||"
    return (f"| {r['name']} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['peak_alloc_gb']:.2f} | "
            f"{r['peak_reserved_gb']:.2f} | {100 * r['mfu']:.1f}% |")


# ---------------------------------------------------------------- main

IMAGE_TOKEN_ID = 151655


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    ap.add_argument("--only", default="", help="comma list of setting-name prefixes or groups (a,b,c,d)")
    ap.add_argument("--plan", default="measured", choices=["measured", "next", "compiled", "shipped"],
                    help="measured: the settings behind bench/RESULTS.md; next: not yet run experiments; "
                         "compiled: eager vs compiled decoder layers for (b) and (d); shipped: (a), lora.py's "
                         "CUDA default as (b) and (d), (c) compiled with and without CUDA graphs")
    ap.add_argument("--mem_limit_gb", type=float, default=7.0, help="(b) peak reserved memory limit")
    ap.add_argument("--samples", type=int, default=64, help="distinct synthetic samples")
    ap.add_argument("--steps", type=int, default=0,
                    help="timed optimizer steps for the (b)/(c)/(d) settings (0: each setting's own); more "
                         "steps average out the run-to-run jitter of short windows")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run (b)'s winner and the (d) rows this many times, alternating, so the MoE-LoRA "
                         "vs LoRA ratio is measured more than once in the same process")
    ap.add_argument("--d_at", default="", help="(d): compare at these (b) settings (comma list) instead of "
                                               "(b)'s winner")
    ap.add_argument("--d_stats", type=int, default=0,
                    help="(d): also a MoE-LoRA row with routing statistics on every n-th forward (1 = every "
                         "forward, as before; the default rows use 10, like the Trainer)")
    ap.add_argument("--auxsummed", action="store_true", help="(d): also the pre-fix aux-loss-summed row")
    ap.add_argument("--profile_d", action="store_true",
                    help="(d): profile one step of LoRA and each MoE-LoRA row (GPU busy, kernel count)")
    ap.add_argument("--interleave", type=int, default=0,
                    help="(d): also time LoRA and MoE-LoRA in N alternating rounds, both models resident "
                         "(robust to the machine drifting during the run)")
    ap.add_argument("--debug_cudagraphs", action="store_true",
                    help="log why CUDA graphs are re-recorded (torch._inductor.cudagraph_trees at DEBUG)")
    ap.add_argument("--out", default="bench/out/train_throughput.json")
    args = ap.parse_args(argv)
    if args.debug_cudagraphs:
        import logging
        lg = logging.getLogger("torch._inductor.cudagraph_trees")
        lg.setLevel(logging.DEBUG)
        lg.addHandler(logging.StreamHandler())
    global IMAGE_TOKEN_ID

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.tiny:
        print("No CUDA device: use --tiny for the CPU smoke run.")
        return 2
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(json.dumps(common.versions()))
    processor = common.load_bench_processor()
    samples = common.make_samples(processor, args.samples)
    pad_id = processor.tokenizer.pad_token_id
    IMAGE_TOKEN_ID = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    lens = [s["input_ids"].numel() for s in samples]
    labs = [int((s["labels"] != -100).sum()) for s in samples]
    print(f"samples: {len(samples)}, tokens/sample mean {sum(lens) / len(lens):.1f} (min {min(lens)}, "
          f"max {max(lens)}), labelled mean {sum(labs) / len(labs):.1f}, image grid {samples[0]['image_grid_thw'].tolist()}")

    settings = default_settings(args.tiny, args.plan)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        settings = [s for s in settings if s.group in keys or any(s.name.startswith(k) for k in keys)]
        want_d = "d" in keys
    else:
        want_d = True

    if args.steps:
        settings = [s if s.group == "a" else replace(s, steps=args.steps) for s in settings]

    results: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps({"versions": common.versions(), "results": results}, indent=1))

    # rope positions of each sample are a property of the architecture: compute once on a small model
    rope_fn = packing.find_rope_index_fn(common.build_model(tiny=True, device="cpu", dtype=torch.float32))
    for s in samples:
        s["position_ids"] = packing.rope_positions(rope_fn, s["input_ids"], s["image_grid_thw"], IMAGE_TOKEN_ID)

    state: dict = {}
    global PROFILE_DIR
    PROFILE_DIR = out.parent
    queue = list(settings)
    # (d) runs right after the (b) settings, at (b)'s winner among them
    n_b = max((i for i, s in enumerate(queue) if s.group == "b"), default=-1) + 1
    if want_d and n_b:
        queue.insert(n_b, None)
    for st in queue:
        if st is None:  # (d): MoE-LoRA vs LoRA at (b)'s winner
            bests = [pick_b(results, args.mem_limit_gb, n) for n in (args.d_at.split(",") if args.d_at else [""])]
            if None in bests:
                print("[d] no (b) setting within the memory limit to compare at")
            for best, rep in itertools.product([b for b in bests if b], range(args.repeat)):
                # LoRA again right before the MoE-LoRA rows: each ratio comes from adjacent runs
                tag, prof = f"#{rep + 1}", args.profile_d and rep == 0
                d_queue = [replace(d, profile=prof) for d in
                           [best, *d_variants(best, auxsummed=args.auxsummed and rep == 0,
                                                stats_every=args.d_stats)]]
                for dst in d_queue:
                    run_one(replace(dst, name=dst.name + tag), device, args, samples, pad_id, results, save, state)
            for best in (b for b in bests if b and args.interleave):
                state.update(model=None, key=None)  # the interleaved run builds its own two models
                common.reset_memory(device)
                try:
                    r = interleaved_d(best, args.interleave, device, args.tiny, samples, pad_id)
                except Exception as e:  # noqa: BLE001 - keep the other results
                    traceback.print_exc()
                    r = dict(name=f"d_interleaved_{best.name}", error=f"{type(e).__name__}: {e}"[:300])
                results.append(r)
                print(fmt_interleaved(r) if "error" not in r else r, flush=True)
                save()
                common.reset_memory(device)
            continue
        run_one(st, device, args, samples, pad_id, results, save, state)

    print(summary(results, args.mem_limit_gb))
    save()
    return 0


def run_one(st: Setting, device, args, samples, pad_id, results, save, state) -> None:
    if True:
        if st.build_key != state.get("key"):
            state["model"] = None
            common.reset_memory(device)
            t0 = time.perf_counter()
            state["model"], state["aux"], state["dtype"] = build(st, device, args.tiny)
            state["key"] = st.build_key
            if state["model"] is None:
                results.append(dict(name=st.name, group=st.group, error="adapter not available"))
                state["key"] = None
                return
            if state.get("flops") is None:
                f = state["flops"] = common.count_flops(state["model"], samples[0])
                print(f"FLOPs/sample: text {f.text:.3e}, lm_head {f.lm_head:.3e}, vision {f.vision:.3e}")
            print(f"built {st.build_key} in {time.perf_counter() - t0:.1f}s", flush=True)
        try:
            r = run_setting(st, state["model"], state["aux"], state["dtype"], samples, pad_id, device,
                            state["flops"].total)
        except torch.OutOfMemoryError as e:
            r = dict(name=st.name, group=st.group, error=f"OOM: {str(e)[:200]}")
        except Exception as e:  # noqa: BLE001 - one failing setting must not lose the others
            traceback.print_exc()
            r = dict(name=st.name, group=st.group, error=f"{type(e).__name__}: {e}"[:300])
        results.append(r)
        print(fmt(r), flush=True)
        save()
        common.reset_memory(device)


def pick_b(results, limit_gb, name: str = "") -> Setting | None:
    ok = [r for r in results if r.get("group") == "b" and "error" not in r and "#" not in r["name"]
          and not (r["peak_reserved_gb"] > limit_gb) and r["name"] == (name or r["name"])]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["samples_per_s"])
    return Setting(**best["setting"])


def summary(results, limit_gb) -> str:
    lines = ["", "| setting | samples/s | tokens/s | peak alloc GiB | peak reserved GiB | MFU |",
             "|---|---|---|---|---|---|", *[fmt(r) for r in results if "ratios" not in r]]
    lines += [fmt_interleaved(r) for r in results if "ratios" in r]
    ok = [r for r in results if "error" not in r and "ratios" not in r]
    by = {r["name"]: r for r in ok}
    a = next((r for r in ok if r["group"] == "a"), None)
    b_s = pick_b(results, limit_gb)
    b = by.get(b_s.name) if b_s else None
    c = max((r for r in ok if r["group"] == "c"), key=lambda r: r["mfu"], default=None)
    if a and b:
        lines.append(f"speed-up over the seed stack: {b['samples_per_s'] / a['samples_per_s']:.1f}x "
                     f"((b) {b['name']} {b['samples_per_s']:.2f} vs (a) {a['samples_per_s']:.2f} samples/s, "
                     f"(b) peak reserved {b['peak_reserved_gb']:.2f} GiB)")
    if c:
        lines.append(f"(c) best MFU: {100 * c['mfu']:.1f}% ({c['name']}, {c['samples_per_s']:.1f} samples/s)")
    ratios: dict[str, list[float]] = {}
    for d in (r for r in ok if r["group"] == "d"):
        stem, _, tag = d["name"].partition("#")
        ref = next((r for r in ok if r["group"] == "b" and r["name"].partition("#")[2] == tag
                    and stem.startswith(r["name"].partition("#")[0].replace("b_", "d_moelora_", 1))), None)
        if ref:
            ratio = d["samples_per_s"] / ref["samples_per_s"]
            ratios.setdefault(stem, []).append(ratio)
            lines.append(f"(d) {d['name']}: {d['samples_per_s']:.2f} vs LoRA {ref['samples_per_s']:.2f} samples/s "
                         f"({100 * (ratio - 1):+.1f}% speed), "
                         f"peak reserved {d['peak_reserved_gb']:.2f} vs {ref['peak_reserved_gb']:.2f} GiB")
    for stem, rs in ratios.items():
        lines.append(f"(d) {stem}: mean {100 * (sum(rs) / len(rs) - 1):+.1f}% vs LoRA over {len(rs)} run(s) "
                     f"(min {100 * (min(rs) - 1):+.1f}%, max {100 * (max(rs) - 1):+.1f}%)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
