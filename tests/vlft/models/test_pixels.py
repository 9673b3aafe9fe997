"""Issue 19 item 4: --max_pixels / --min_pixels bound the image tokens on both real processors."""

from __future__ import annotations

import pytest
from PIL import Image

from vlft.models.loading import DEFAULT_MAX_PIXELS, load_processor
from vlft.paths import shared_assets_dir


@pytest.mark.parametrize("family,patch", [("qwen3-vl-4b-instruct", 16), ("qwen2.5-vl-3b-instruct", 14)])
def test_pixel_limit_applies_to_both_families(family, patch):
    d = shared_assets_dir(family)
    if d is None:
        pytest.skip(f"../shared/assets/{family} not present")
    unit = (patch * 2) ** 2                         # pixels per image token (merge 2 x 2)
    proc = load_processor(d)                        # the defaults every stage uses
    for w, h in ((640, 480), (2560, 1920)):
        thw = proc(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[Image.new("RGB", (w, h))],
                   return_tensors="pt")["image_grid_thw"][0].tolist()
        tokens = thw[0] * thw[1] * thw[2] // 4
        assert tokens * unit <= DEFAULT_MAX_PIXELS, (family, w, h, tokens)
    small = load_processor(d, max_pixels=64 * 64, min_pixels=32 * 32)
    assert small.image_processor.get_number_of_image_patches(480, 640) // 4 * unit <= 64 * 64
