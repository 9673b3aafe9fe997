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
    assert capsys.readouterr().out.strip() == f"model ready: {target}"
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
