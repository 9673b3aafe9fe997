"""download_model.py --tiny: the folder loads with the Auto classes, and a real COCO image through
the real chat template gives as many image tokens as the processor's grid says."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from PIL import Image

from vlft.paths import REPO_DIR, shared_assets_dir


@pytest.mark.parametrize("family", ["qwen3-vl", "qwen2.5-vl"])
def test_tiny_cli_output_loads_and_counts_image_tokens(tmp_path, coco_sample_dir, family, capsys):
    if family == "qwen2.5-vl" and shared_assets_dir("qwen2.5-vl-3b-instruct") is None:
        pytest.skip("../shared/assets/qwen2.5-vl-3b-instruct not present")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlft.models.tiny import is_tiny

    spec = importlib.util.spec_from_file_location("download_model", REPO_DIR / "download_model.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    target = tmp_path / f"tiny-{family}"
    assert cli.main(["--tiny", "--target", str(target), "--family", family]) == 0
    # the last line: an installed deepspeed prints an accelerator warning to stdout when imported
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"model ready: {target}"
    assert is_tiny(target)
    assert sum(p.stat().st_size for p in target.glob("*.safetensors")) < 200e6   # "a few MB" + full vocab

    model = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(target)
    image_path = sorted((coco_sample_dir / "images").glob("*.jpg"))[0]
    messages = [{"role": "user", "content": [{"type": "image", "image": str(image_path)},
                                             {"type": "text", "text": "COCO Yes:"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text and text.endswith("<|im_start|>assistant\n")
    with Image.open(image_path) as im:
        inputs = processor(text=[text], images=[im.convert("RGB")], return_tensors="pt")

    grid = inputs["image_grid_thw"][0].tolist()
    merge = processor.image_processor.merge_size
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_image_tokens = int((inputs["input_ids"] == image_token_id).sum())
    assert n_image_tokens == math.prod(grid) // merge**2 > 0
    assert inputs["pixel_values"].shape[0] == math.prod(grid)   # one row per 14/16-px patch

    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.get_text_config().vocab_size)
    assert torch.isfinite(out.logits).all()


def _download_cli():
    spec = importlib.util.spec_from_file_location("download_model_prior", REPO_DIR / "download_model.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def _caption_split(path, coco_sample_dir, captions):
    import json
    image = str(sorted((coco_sample_dir / "images").glob("*.jpg"))[0])
    rows = [{"id": f"c{i}", "messages": [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "COCO Yes:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": c}]}]} for i, c in enumerate(captions)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_language_prior_learns_the_captions_and_is_cached(tmp_path, coco_sample_dir, monkeypatch, capsys):
    """--tiny_prior_data: the loss on the captions falls, the model writes them after end-of-text, the
    config says what it was trained on, and a second build is a copy from the cache."""
    import json

    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from vlft.models.tiny import PRIOR_KEY, describe_tiny, is_tiny, prior_cache_dir

    monkeypatch.setenv("VLFT_CACHE", str(tmp_path / "cache"))
    split = _caption_split(tmp_path / "train.json", coco_sample_dir,
                           ["A red bus parked on the street.", "A cat sleeping on a sofa."])
    cli = _download_cli()
    target = tmp_path / "tiny"
    args = ["--tiny", "--target", str(target), "--tiny_prior_data", str(split), "--tiny_prior_steps", "60"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"model ready: {target}"
    cfg = json.loads((target / "config.json").read_text(encoding="utf-8"))
    prior = cfg[PRIOR_KEY]
    assert prior["texts"] == 2 and prior["steps"] == 60 and prior["final_loss"] < prior["first_loss"] / 3
    assert is_tiny(target) and "language prior (60 steps" in describe_tiny(target)
    cached = list(prior_cache_dir().iterdir())
    assert len(cached) == 1 and (cached[0] / ".complete").is_file()

    model = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(target)
    ids = tok("<|endoftext|>A red", return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    assert tok.decode(out[0, ids.shape[1]:]).startswith(" bus parked")

    weights = (target / "model.safetensors").read_bytes()
    again = tmp_path / "tiny-again"
    assert cli.main([*args[:2], str(again), *args[3:]]) == 0
    assert (again / "model.safetensors").read_bytes() == weights           # copied, not rebuilt
    assert len(list(prior_cache_dir().iterdir())) == 1


def test_language_prior_bad_data_is_one_line(tmp_path, capsys):
    cli = _download_cli()
    assert cli.main(["--tiny", "--target", str(tmp_path / "t"), "--tiny_prior_data", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.json" in err and len(err.splitlines()) == 1
