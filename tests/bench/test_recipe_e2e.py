"""bench.recipe_e2e's seed comparison: the seed script's data, and the one-line result."""

from __future__ import annotations

import json

from bench.recipe_e2e import ratio_line, seed_records


def test_seed_records_are_ours_in_the_seed_format_plus_four_held_out(tmp_path, coco_sample_dir):
    img = next((coco_sample_dir / "images").glob("*.jpg"))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / img.name).write_bytes(img.read_bytes())

    def rec(i):
        return {"id": f"r{i}", "messages": [
            {"role": "user", "content": [{"type": "image", "image": f"images/{img.name}"},
                                         {"type": "text", "text": "COCO Yes:"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"caption {i}"}]}]}

    train, val = tmp_path / "train.json", tmp_path / "val.json"
    train.write_text(json.dumps([rec(i) for i in range(3)]))
    val.write_text(json.dumps([rec(10 + i) for i in range(6)]))
    rows = seed_records(train, val)
    assert len(rows) == 3 + 4  # the seed script trains on all but the last 4
    user, assistant = rows[0]["conversations"]
    path = user["value"].split("<|vision_start|>")[1].split("<|vision_end|>")[0]
    assert user["value"].startswith("COCO Yes: ") and path == str((tmp_path / "images" / img.name).resolve())
    assert assistant == {"from": "assistant", "value": "caption 0"} and rows[3]["id"] == "r10"


def test_ratio_line_from_one_invocations_rows():
    rows = [dict(adapter="seed", cache="", wall_s=300.0),
            dict(adapter="lora", cache="cold", wall_s=60.0), dict(adapter="moelora", cache="cold", wall_s=90.0),
            dict(adapter="lora", cache="warm", wall_s=30.0), dict(adapter="moelora", cache="warm", wall_s=33.0)]
    assert ratio_line(rows) == ("time to adapter vs the seed's own lora.py: 5.0× (cold), 10.0× (warm); "
                                "MoE-LoRA/LoRA wall: 1.10 (warm cache)")
    failed = [dict(adapter="seed", cache="", error="CalledProcessError"), *rows[1:3]]
    assert ratio_line(failed) == ("time to adapter vs the seed's own lora.py: n/a (cold), n/a (warm); "
                                  "MoE-LoRA/LoRA wall: 1.50 (cold cache)")
