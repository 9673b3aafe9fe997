"""End to end through the real scripts, as the demo runs them: the tiny model with a language prior,
a short lora.py fit on a handful of COCO samples, then evaluate.py: the adapter's captions are
non-empty and score above the base model's; the report names the split, counts the images the
adapter trained on, and links the loss-curve picture drawn from the logged history."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vlft.paths import REPO_DIR

PIXELS = ["--max_pixels", str(64 * 64), "--min_pixels", str(32 * 32)]
CAPTIONS = ["A man is making pizzas in a kitchen.", "A bird is flying over the sand.",
            "A pizza pie sitting on a table.", "Two dogs are playing in the snow."]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_cli"), REPO_DIR / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fit_split(tmp_path_factory, coco_sample_dir) -> Path:
    images = sorted((coco_sample_dir / "images").glob("*.jpg"))[: len(CAPTIONS)]
    rows = [{"id": f"s{i}", "messages": [
        {"role": "user", "content": [{"type": "image", "image": str(im)}, {"type": "text", "text": "COCO Yes:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": cap}]}]} for i, (im, cap) in
            enumerate(zip(images, CAPTIONS))]
    path = tmp_path_factory.mktemp("fit") / "train.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_short_fit_captions_and_beats_the_base(fit_split, tmp_path, capsys):
    from vlft.models.tiny import build_tiny_with_prior

    model = build_tiny_with_prior(tmp_path / "tiny", fit_split, steps=100, cache=False)
    adapter = tmp_path / "lora"
    assert _script("lora.py").main([
        "--model", str(model), "--train_json", str(fit_split), "--eval_data_path", str(fit_split),
        "--output_dir", str(adapter), "--max_steps", "30", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--learning_rate", "3e-3", "--warmup_ratio", "0",
        "--lora_target_modules", "all", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0",
        "--no-gradient_checkpointing", "--logging_steps", "5", "--save_steps", "15", "--report_to", "none",
        "--num_sample_predictions", "0", "--seed", "0", *PIXELS]) == 0

    out = tmp_path / "eval"
    assert _script("evaluate.py").main([
        "--model", str(model), "--adapter", str(adapter), "--data_path", str(fit_split),
        "--output_dir", str(out), "--max_new_tokens", "16", "--report_to", "none", *PIXELS]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    base, tuned = report["systems"]["base"]["metrics"], report["systems"]["lora"]["metrics"]
    preds = [json.loads(x)["prediction"] for x in (out / "predictions_lora.jsonl").read_text().splitlines()]
    assert len(preds) == len(CAPTIONS) and all(p.strip() for p in preds), preds
    for metric in ("BLEU-1", "ROUGE-L", "CIDEr-D"):
        assert tuned[metric] > base[metric] + 0.1, (metric, base, tuned, preds)

    assert report["split"]["in_training_data"] == {"base": None, "lora": len(CAPTIONS)}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f"in the training data (a fit, not held out): lora: {len(CAPTIONS)} of {len(CAPTIONS)}" in md
    assert "tiny model with random weights and a language prior" in md and "not caption quality" in md
    assert "![Training and evaluation loss](loss_curves.png)" in md
    png = (out / "loss_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
