"""bench/unsloth_peer.py's records (the peer itself needs a GPU): Unsloth gets our training records with
every image already at the size our processor gives it, so both stacks train on the same shapes."""

from __future__ import annotations

import json

from PIL import Image


def test_peer_records_keep_the_text_and_match_our_image_token_grid(tmp_path, coco_sample_dir, tiny_model_dir):
    from bench.unsloth_peer import records
    from vlft.models.loading import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, load_processor

    (tmp_path / "images").mkdir()
    names = []
    for img in sorted((coco_sample_dir / "images").glob("*.jpg"))[:3]:
        (tmp_path / "images" / img.name).write_bytes(img.read_bytes())
        names.append(img.name)
    rows = [{"id": n, "messages": [
        {"role": "user", "content": [{"type": "image", "image": f"images/{n}"}, {"type": "text", "text": "COCO Yes:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"caption of {n}"}]}]} for n in names]
    train = tmp_path / "train.json"
    train.write_text(json.dumps(rows))

    peer = records(train, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS)
    processor = load_processor(tiny_model_dir)
    patch = processor.image_processor.patch_size
    for name, row in zip(names, peer):
        user, assistant = row["messages"]
        image = user["content"][0]["image"]
        assert user["content"][1] == {"type": "text", "text": "COCO Yes:"}
        assert assistant["content"] == [{"type": "text", "text": f"caption of {name}"}]
        with Image.open(tmp_path / "images" / name) as original:
            grid = processor.image_processor(images=[original.convert("RGB")], return_tensors="pt")["image_grid_thw"]
        # the pre-resized image is what our processor would make of the original: the same patch grid,
        # and the peer's processor (no further resizing) then sees the same number of image tokens
        assert (image.height // patch, image.width // patch) == tuple(grid[0, 1:].tolist())
        assert image.height * image.width <= DEFAULT_MAX_PIXELS
