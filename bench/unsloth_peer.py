#!/usr/bin/env python
"""The peer in issue 18's measurement: Unsloth's ``FastVisionModel`` QLoRA on the same records (GPU only).

Run in its own process, beside our stack's (Unsloth pins transformers <= 5.17, ours needs >= 5.20): the
records are the training JSON lora.py trained on (``--train_json``, our ``messages`` format), the model
the same random-weight Qwen3-VL-4B folder, the images resized exactly as our processor resizes them
(``--max_pixels``, Qwen3-VL's 32-pixel grid), so both stacks see the same (batch, length) shapes. The
adapter matches lora.py's default: LoRA r=8, alpha 16 on the language model's q/k/v/o projections, 4-bit
NF4 base, bf16 compute, learning rate 1e-4; Unsloth's own defaults otherwise (its offloaded
checkpointing, dropout 0, 8-bit AdamW as its notebooks use).

Prints one ``UNSLOTH_RESULT {json}`` line: whole-run wall time from the process start to the saved
adapter, load time, the first step, steady samples/s (steps after ``--warm``), peak reserved memory.
It does not import this project (a different transformers). Not a test; nothing here runs on a CPU.

    HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/site_unsloth python bench/unsloth_peer.py --model M --train_json T \\
        --batch 24 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def process_age() -> float:
    """Seconds since this process started (Linux /proc)."""
    with open("/proc/self/stat", "rb") as f:
        started = int(f.read().rsplit(b")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime", "rb") as f:
        return float(f.read().split()[0]) - started


def records(train_json: Path, max_pixels: int, min_pixels: int) -> list[dict]:
    """Our training records with every image opened and resized to the size our processor gives it."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    out = []
    for s in json.loads(train_json.read_text(encoding="utf-8")):
        msgs = []
        for m in s["messages"]:
            content = []
            for part in m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]:
                if part.get("type") == "image":
                    with Image.open(train_json.parent / part["image"]) as im:
                        im = im.convert("RGB")
                        h, w = smart_resize(im.height, im.width, factor=32, min_pixels=min_pixels,
                                            max_pixels=max_pixels)
                        content.append({"type": "image", "image": im.resize((w, h))})
                else:
                    content.append({"type": "text", "text": part["text"]})
            msgs.append({"role": m["role"], "content": content})
        out.append({"messages": msgs})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train_json", required=True, type=Path)
    ap.add_argument("--output_dir", default="/tmp/unsloth_out")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max_pixels", type=int, default=288 * 288, help="lora.py's default")
    ap.add_argument("--min_pixels", type=int, default=32 * 32)
    ap.add_argument("--warm", type=int, default=2, help="steps left out of the steady rate")
    a = ap.parse_args(argv)

    import torch
    from unsloth import FastVisionModel  # before transformers/trl: it patches them
    from unsloth.trainer import UnslothVisionDataCollator
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    t_import = process_age()
    t = time.perf_counter()
    model, processor = FastVisionModel.from_pretrained(a.model, load_in_4bit=True, dtype=torch.bfloat16,
                                                       use_gradient_checkpointing="unsloth")
    model = FastVisionModel.get_peft_model(
        model, r=8, lora_alpha=16, lora_dropout=0.0, bias="none", finetune_vision_layers=False,
        finetune_language_layers=True, finetune_attention_modules=True, finetune_mlp_modules=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], random_state=0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    FastVisionModel.for_training(model)
    load_s = time.perf_counter() - t

    t = time.perf_counter()
    data = records(a.train_json, a.max_pixels, a.min_pixels)
    data_s = time.perf_counter() - t

    steps: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            steps.append(time.perf_counter() - self.t)

    trainer = SFTTrainer(
        model=model, tokenizer=processor, train_dataset=data,
        data_collator=UnslothVisionDataCollator(model, processor, resize="max"),
        callbacks=[StepTimes()],
        args=SFTConfig(output_dir=a.output_dir, per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
                       num_train_epochs=a.epochs, learning_rate=1e-4, lr_scheduler_type="cosine", warmup_ratio=0.03,
                       bf16=True, optim="adamw_8bit", logging_steps=1, save_strategy="no", report_to="none",
                       seed=0, remove_unused_columns=False, dataset_text_field="",
                       dataset_kwargs={"skip_prepare_dataset": True}, max_length=2048))
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    model.save_pretrained(a.output_dir)
    save_s = time.perf_counter() - t
    steady = steps[a.warm:] or steps
    result = dict(batch=a.batch, epochs=a.epochs, n_train=len(data), trainable=trainable, steps=len(steps),
                  imports_s=round(t_import, 1), load_s=round(load_s, 1), data_s=round(data_s, 1),
                  train_s=round(train_s, 1), save_s=round(save_s, 1), first_step_s=round(steps[0], 1) if steps else None,
                  steady_samples_per_s=round(a.batch * len(steady) / sum(steady), 2) if steady else None,
                  final_loss=out.training_loss,
                  peak_alloc_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                  peak_reserved_gb=round(torch.cuda.max_memory_reserved() / 2**30, 2),
                  wall_s=round(process_age(), 1))
    print("UNSLOTH_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
