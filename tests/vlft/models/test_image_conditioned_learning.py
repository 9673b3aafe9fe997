"""Pixels reach the answer through the whole path: loading, resizing, collator, image grid, M-RoPE
positions, adapter.

Synthetic images drawn here (one coloured shape each: circle, square or triangle, random size and
place), captioned with the shape's colour. lora.py and MoeLORA.py fine-tune the tiny model on them; on
held-out images the adapters name the colour well above chance (1 in 4). A control run trained on the
same captions with blanked images (all one grey) stays at chance: what the adapters learned came from
the pixels, not from the caption statistics.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from vlft.paths import REPO_DIR

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
SIZE = 64                     # 64 x 64 pixels: 4 image tokens after the 2 x 2 merge of 16-px patches
PIXELS = ["--max_pixels", str(SIZE * SIZE), "--min_pixels", str(SIZE * SIZE)]
PROMPT = "COCO Yes:"
N_TRAIN, N_HELD_OUT = 8, 4    # images per colour
# Enough for both adapters to separate the 4 colours (measured: each fits in well under a minute on
# one CPU thread); the rank, learning rate and targets are ordinary flags of the stage scripts.
TRAIN_FLAGS = ["--max_steps", "100", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
               "--learning_rate", "5e-3", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
               "--lora_target_modules", "all", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0",
               "--logging_steps", "10", "--save_strategy", "no", "--report_to", "none",
               "--num_sample_predictions", "0", "--no-gradient_checkpointing", "--no-load_in_4bit", "--seed", "0",
               *PIXELS]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_cli"), REPO_DIR / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def draw_shape(colour: str, rng: random.Random) -> Image.Image:
    """One shape of ``colour`` on a light background; shape, size and place vary."""
    bg = tuple(rng.randint(235, 255) for _ in range(3))
    im = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(im)
    r = rng.randint(24, 30)
    cx, cy = rng.randint(r, SIZE - r), rng.randint(r, SIZE - r)
    fill = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLOURS[colour])
    shape = rng.choice(["circle", "square", "triangle"])
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return im


def write_split(root: Path, n_per_colour: int, seed: int, blank: bool = False) -> Path:
    """A messages-format split: one image per sample, the caption is the colour's name."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_per_colour):
        for colour in COLOURS:
            im = draw_shape(colour, rng)
            if blank:
                im = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
            path = root / f"{colour}{i}.png"
            im.save(path)
            records.append({"id": path.stem, "references": [colour], "messages": [
                {"role": "user", "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": PROMPT}]},
                {"role": "assistant", "content": [{"type": "text", "text": colour}]}]})
    rng.shuffle(records)
    out = root / "data.json"
    out.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return out


def named_colour(prediction: str) -> str | None:
    """The one colour a caption names (None: none or several)."""
    words = set(prediction.lower().replace(".", " ").split())
    named = [c for c in COLOURS if c in words]
    return named[0] if len(named) == 1 else None


def accuracy(model_dir: Path, adapter: Path, split: Path) -> tuple[float, list[str]]:
    from vlft.infer import VLGenerator, items_from_split, predict

    items, errors = items_from_split(split, prompt=PROMPT)
    assert not errors
    gen = VLGenerator(model_dir, adapter=adapter, precision="none", max_pixels=SIZE * SIZE, min_pixels=SIZE * SIZE)
    rows = predict(gen, items, batch_size=16, max_new_tokens=4, progress=False).rows
    hits = [named_colour(r["prediction"]) == r["references"][0] for r in rows]
    return sum(hits) / len(hits), [r["prediction"] for r in rows]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return {"train": write_split(root / "train", N_TRAIN, seed=0),
            "held_out": write_split(root / "held_out", N_HELD_OUT, seed=1),
            "train_blank": write_split(root / "train_blank", N_TRAIN, seed=0, blank=True),
            "held_out_blank": write_split(root / "held_out_blank", N_HELD_OUT, seed=1, blank=True)}


@pytest.fixture(scope="module")
def learnable_tiny_dir(tmp_path_factory, shapes) -> Path:
    """The tiny model with a language prior from the training captions: it knows the colour words (as
    plain text, never with an image), not which image gets which."""
    from vlft.models.tiny import build_tiny_with_prior
    return build_tiny_with_prior(tmp_path_factory.mktemp("tiny-shapes"), shapes["train"], steps=60, cache=False)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["lora.py", "MoeLORA.py"])
def test_adapters_name_the_colour_of_held_out_images(script, learnable_tiny_dir, shapes, tmp_path):
    out = tmp_path / "adapter"
    assert _script(script).main(["--model", str(learnable_tiny_dir), "--train_json", str(shapes["train"]),
                                 "--output_dir", str(out), *TRAIN_FLAGS]) == 0
    acc, preds = accuracy(learnable_tiny_dir, out, shapes["held_out"])
    print(f"{script}: {acc:.0%} of held-out colours named")
    assert acc >= 0.75, f"{script}: {acc:.0%} of held-out colours named (chance 25%): {preds}"


@pytest.mark.slow
def test_blanked_images_stay_at_chance(learnable_tiny_dir, shapes, tmp_path):
    out = tmp_path / "adapter"
    assert _script("lora.py").main(["--model", str(learnable_tiny_dir), "--train_json", str(shapes["train_blank"]),
                                    "--output_dir", str(out), *TRAIN_FLAGS]) == 0
    acc, preds = accuracy(learnable_tiny_dir, out, shapes["held_out_blank"])
    print(f"blanked control: {acc:.0%} of held-out colours named")
    assert acc <= 0.5, f"blanked images: {acc:.0%} named (chance 25%): {preds}"
