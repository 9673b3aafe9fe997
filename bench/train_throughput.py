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

  python bench/train_throughput.py                 # on a CUDA GPU, all settings
  python bench/train_throughput.py --tiny          # CPU smoke run on the tiny model
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402  (sets PYTORCH_CUDA_ALLOC_CONF before torch touches CUDA)
import torch  # noqa: E402

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

    @property
    def build_key(self):
        return (self.quant, self.dtype, self.adapter)


def default_settings(tiny: bool) -> list[Setting]:
    seed = Setting("a_seed_4bit_fp16_mb1x8_ckpt_fullloss", "a", dtype="fp16", micro_batch=1, accum=8,
                   ckpt_every=1, loss="plain", warmup=1, steps=3)
    b = [Setting(f"b_4bit_mb{mb}x{acc}_ckpt{ck}" + (f"_pack{pk}" if pk else ""), "b", micro_batch=mb,
                 accum=acc, ckpt_every=ck, pack_tokens=pk)
         for mb, acc, ck, pk in [(8, 4, 0, None), (16, 2, 1, None), (16, 2, 2, None), (32, 1, 1, None),
                                 (32, 1, 1, 1024), (48, 1, 1, None), (64, 1, 1, None)]]
    c = [Setting(f"c_bf16_mb{mb}_ckpt{ck}" + (f"_pack{pk}" if pk else ""), "c", quant="none", micro_batch=mb,
                 accum=1, ckpt_every=ck, pack_tokens=pk, warmup=2, steps=5)
         for mb, ck, pk in [(32, 0, None), (64, 0, None), (64, 0, 1024), (96, 0, None), (128, 0, None)]]
    if tiny:  # keep the CPU smoke run short
        seed = replace(seed, accum=2, steps=1)
        b = [replace(s, micro_batch=max(1, s.micro_batch // 8), accum=1, warmup=1, steps=1) for s in b[:2]] + \
            [replace(b[4], micro_batch=4, accum=1, warmup=1, steps=1, pack_tokens=256)]
        c = [replace(s, micro_batch=4, warmup=1, steps=1) for s in c[:1]]
    return [seed, *b, *c]


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
            b = fast.collate_padded(group, pad_id)
            b.pop("position_ids", None)
            b["mm_token_type_ids"] = (b["input_ids"] == IMAGE_TOKEN_ID).int()
        elif setting.pack_tokens:
            b = fast.pack_batch(group, pad_id, max_tokens=setting.pack_tokens)
        else:
            b = fast.collate_padded(group, pad_id)
        b["_samples"] = len(group)
        b["_tokens"] = sum(s["input_ids"].numel() for s in group)
        out.append(fast.to_device(b, device))
    return out


def loss_fn(setting: Setting, model, batch, aux_fn):
    inputs = {k: v for k, v in batch.items() if not k.startswith("_")}
    if setting.loss == "plain":
        loss = model(**inputs, use_cache=False).loss
    else:
        loss = fast.lm_loss(model, inputs, chunk_size=setting.chunk)
    if aux_fn is not None:
        loss = loss + 0.01 * aux_fn(model)
    return loss


def run_setting(setting: Setting, model, aux_fn, dtype, samples, pad_id, device, flops_per_sample):
    if setting.ckpt_every and setting.loss == "plain":
        # the seed: HF checkpointing everywhere (vision blocks too), reentrant + input grads
        model.enable_input_require_grads()
        fast.unwrap_causal_lm(model).gradient_checkpointing_enable()
    else:
        fast.set_checkpointing(model, setting.ckpt_every)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.startswith("cuda"))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    n_micro = (setting.warmup + setting.steps) * setting.accum
    batches = make_batches(samples, setting, pad_id, device, min(n_micro, 16))
    it = itertools.cycle(batches)
    autocast = torch.autocast(device_type="cuda", dtype=dtype) if device != "cpu" else torch.autocast("cpu", enabled=False)
    common.reset_memory(device)
    timer = common.CudaTimer(device)

    def opt_step():
        n_s = n_t = 0
        last = None
        for _ in range(setting.accum):
            b = next(it)
            with autocast:
                loss = loss_fn(setting, model, b, aux_fn) / setting.accum
            (scaler.scale(loss) if scaler else loss).backward()
            n_s += b["_samples"]
            n_t += b["_tokens"]
            last = loss
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        return n_s, n_t, last

    t0 = time.perf_counter()
    for _ in range(setting.warmup):
        _, _, loss = opt_step()
    warm_s = time.perf_counter() - t0
    n_s = n_t = 0
    with timer.region() as r:
        for _ in range(setting.steps):
            s, t, loss = opt_step()
            n_s += s
            n_t += t
    alloc, reserved = common.peak_memory_gb(device)
    sps = n_s / r["s"]
    res = dict(name=setting.name, group=setting.group, samples_per_s=sps, tokens_per_s=n_t / r["s"],
               peak_alloc_gb=alloc, peak_reserved_gb=reserved,
               mfu=sps * flops_per_sample / (common.H100_BF16_DENSE_TFLOPS * 1e12),
               loss=float(loss.detach()) * setting.accum, timed_s=r["s"], warmup_s=warm_s,
               trainable_params=sum(p.numel() for p in params), setting=asdict(setting))
    del opt, batches, it
    return res


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
    ap.add_argument("--mem_limit_gb", type=float, default=7.0, help="(b) peak reserved memory limit")
    ap.add_argument("--samples", type=int, default=64, help="distinct synthetic samples")
    ap.add_argument("--out", default="bench/out/train_throughput.json")
    args = ap.parse_args(argv)
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

    settings = default_settings(args.tiny)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        settings = [s for s in settings if s.group in keys or any(s.name.startswith(k) for k in keys)]
        want_d = "d" in keys
    else:
        want_d = True

    results: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps({"versions": common.versions(), "results": results}, indent=1))

    # rope positions of each sample are a property of the architecture: compute once on a small model
    rope_fn = fast.find_rope_index_fn(common.build_model(tiny=True, device="cpu", dtype=torch.float32))
    for s in samples:
        s["position_ids"] = fast.rope_positions(rope_fn, s["input_ids"], s["image_grid_thw"], IMAGE_TOKEN_ID)

    flops = None
    model = None
    key = None
    for st in settings + ([None] if want_d else []):
        if st is None:  # (d): MoE-LoRA vs LoRA at (b)'s winner
            st = pick_b(results, args.mem_limit_gb)
            if st is None:
                print("[d] no (b) setting within the memory limit to compare at")
                break
            st = replace(st, name=st.name.replace("b_", "d_moelora_", 1), group="d", adapter="moelora")
        if st.build_key != key:
            model = None
            common.reset_memory(device)
            t0 = time.perf_counter()
            model, aux, dtype = build(st, device, args.tiny)
            key = st.build_key
            if model is None:
                results.append(dict(name=st.name, group=st.group, error="adapter not available"))
                continue
            if flops is None:
                flops = common.count_flops(model, samples[0])
                print(f"FLOPs/sample: text {flops.text:.3e}, lm_head {flops.lm_head:.3e}, vision {flops.vision:.3e}")
            print(f"built {key} in {time.perf_counter() - t0:.1f}s")
        try:
            r = run_setting(st, model, aux, dtype, samples, pad_id, device, flops.total)
        except torch.OutOfMemoryError as e:
            r = dict(name=st.name, group=st.group, error=f"OOM: {str(e)[:200]}")
        except Exception as e:  # noqa: BLE001 - one failing setting must not lose the others
            traceback.print_exc()
            r = dict(name=st.name, group=st.group, error=f"{type(e).__name__}: {e}"[:300])
        results.append(r)
        print(fmt(r), flush=True)
        save()
        common.reset_memory(device)

    print(summary(results, args.mem_limit_gb))
    save()
    return 0


def pick_b(results, limit_gb) -> Setting | None:
    ok = [r for r in results if r.get("group") == "b" and "error" not in r
          and not (r["peak_reserved_gb"] > limit_gb)]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["samples_per_s"])
    return Setting(**best["setting"])


def summary(results, limit_gb) -> str:
    lines = ["", "| setting | samples/s | tokens/s | peak alloc GiB | peak reserved GiB | MFU |",
             "|---|---|---|---|---|---|", *[fmt(r) for r in results]]
    by = {r["name"]: r for r in results if "error" not in r}
    a = next((r for r in results if r["group"] == "a" and "error" not in r), None)
    b_s = pick_b(results, limit_gb)
    b = by.get(b_s.name) if b_s else None
    c = max((r for r in results if r["group"] == "c" and "error" not in r), key=lambda r: r["mfu"], default=None)
    d = next((r for r in results if r["group"] == "d" and "error" not in r), None)
    if a and b:
        lines.append(f"speed-up over the seed stack: {b['samples_per_s'] / a['samples_per_s']:.1f}x "
                     f"((b) {b['name']} {b['samples_per_s']:.2f} vs (a) {a['samples_per_s']:.2f} samples/s, "
                     f"(b) peak reserved {b['peak_reserved_gb']:.2f} GiB)")
    if c:
        lines.append(f"(c) best MFU: {100 * c['mfu']:.1f}% ({c['name']}, {c['samples_per_s']:.1f} samples/s)")
    if b and d:
        lines.append(f"(d) MoE-LoRA vs LoRA at {b['name']}: {d['samples_per_s']:.2f} vs {b['samples_per_s']:.2f} "
                     f"samples/s ({100 * (1 - d['samples_per_s'] / b['samples_per_s']):+.1f}% slower), "
                     f"peak reserved {d['peak_reserved_gb']:.2f} GiB")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
