"""Captioning throughput: 64 images batched vs one at a time (the seed's test.py loop), issue 4.

Real Qwen3-VL-4B-Instruct architecture (vlft/assets/qwen3-vl-4b-instruct/config.json) with random
weights, the project's processor and resolution policy (max_pixels 288x288), and the same
``VLGenerator`` test.py and evaluate.py use. Images: the bundled COCO sample photos cycled to
``--n_images`` (different sizes -> different image-token counts, so left padding is exercised).

Random weights never emit EOS on purpose, so every caption is forced to exactly
``--max_new_tokens`` tokens (min_new_tokens = max_new_tokens): both ways do identical work.

  python -m bench.caption_throughput                    # CUDA: 4-bit NF4 (the default users get)
  python -m bench.caption_throughput --quant none       # CUDA: bf16 weights
  python -m bench.caption_throughput --tiny             # CPU smoke run on the tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/caption_throughput.py`: the same as `python -m bench.caption_throughput`
    os.execve(sys.executable, [sys.executable, "-m", "bench.caption_throughput", *sys.argv[1:]], {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)})

from bench import common  # noqa: E402  (sets PYTORCH_CUDA_ALLOC_CONF before torch touches CUDA)
import torch  # noqa: E402


def build_generator(tiny: bool, device: str, quant: str, dtype: torch.dtype):
    from bench.lab.generation import FixedLengthGenerator

    model = common.build_model(tiny=tiny, device=device, dtype=dtype)
    if quant == "4bit":
        common.quantize_4bit_(model, compute_dtype=dtype)
    model.config.use_cache = True
    model.config.text_config.use_cache = True
    tok = common.load_bench_processor()
    gc = model.generation_config
    gc.eos_token_id = tok.tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    gc.pad_token_id = gc.bos_token_id = tok.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return FixedLengthGenerator.from_model(model.eval(), tok)  # every caption max_new_tokens long


def caption_items(n: int, prompt: str) -> list[list[dict]]:
    from PIL import Image

    from vlft.infer import caption_messages, list_images
    from vlft.paths import COCO_SAMPLE_DIR

    photos = [Image.open(p).convert("RGB") for p in list_images(COCO_SAMPLE_DIR / "images")]
    return [caption_messages([photos[i % len(photos)]], prompt) for i in range(n)]


def _gb(device: str) -> float | None:
    alloc = common.peak_memory_gb(device)[0]
    return None if alloc != alloc else round(alloc, 2)  # NaN on the CPU -> null in the JSON


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def run(args) -> dict:
    device = "cpu" if args.tiny else args.device
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    quant = "none" if device == "cpu" else args.quant
    gen = build_generator(args.tiny, device, quant, dtype)
    convs = caption_items(args.n_images, args.prompt)
    kw = dict(max_new_tokens=args.max_new_tokens)

    gen.generate_batch(convs[:2], batch_size=2, **kw)  # warm-up: kernels, allocator, processor caches
    result = {"device": device, "quant": quant, "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny,
              "n_images": args.n_images, "new_tokens_per_image": args.max_new_tokens, "versions": common.versions()}

    n_seq = args.n_images if args.sequential_images is None else min(args.sequential_images, args.n_images)
    common.reset_memory(device)
    seq_s = timed(lambda: [gen.generate(c, **kw) for c in convs[:n_seq]], device)
    result["one_at_a_time"] = {"images": n_seq, "seconds": round(seq_s, 3), "images_per_s": round(n_seq / seq_s, 3),
                               "peak_alloc_gb": _gb(device)}
    print(f"one at a time : {n_seq / seq_s:8.2f} images/s  ({n_seq} images, {seq_s:.1f} s)", flush=True)

    result["batched"] = []
    for bs in args.batch_sizes:
        common.reset_memory(device)
        outs: list[str] = []
        s = timed(lambda: outs.extend(gen.generate_batch(convs, batch_size=bs, **kw)), device)
        row = {"batch_size": bs, "seconds": round(s, 3), "images_per_s": round(len(convs) / s, 3),
               "speedup": round((len(convs) / s) / (n_seq / seq_s), 2),
               "peak_alloc_gb": _gb(device)}
        result["batched"].append(row)
        print(f"batch size {bs:3d}: {row['images_per_s']:8.2f} images/s  ({len(convs)} images, {s:.1f} s, "
              f"x{row['speedup']} vs one at a time, peak {row['peak_alloc_gb']} GiB)", flush=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random model on the CPU (smoke run)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quant", choices=["4bit", "none"], default="4bit",
                    help="4bit: NF4 double quant like test.py's CUDA default; none: bf16")
    ap.add_argument("--n_images", type=int, default=64)
    ap.add_argument("--batch_sizes", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 32, 64])
    ap.add_argument("--sequential_images", type=int, default=None,
                    help="time one-at-a-time on only the first N images (default: all)")
    ap.add_argument("--max_new_tokens", type=int, default=32, help="tokens per caption (forced)")
    ap.add_argument("--prompt", default="COCO Yes:")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("error: no CUDA device; use --tiny for a CPU smoke run", file=sys.stderr)
        return 1
    result = run(args)
    print(json.dumps(result))
    if args.json:
        from vlft.utils.io import write_json
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
