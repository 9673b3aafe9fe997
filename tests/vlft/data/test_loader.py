"""load_samples: every accepted record format, path resolution, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlft.data import DataError, load_samples


@pytest.fixture
def imgs(tmp_path, coco_sample_dir) -> list[str]:
    """Three real COCO images copied next to the data file (relative paths resolve there)."""
    out = []
    for p in sorted((coco_sample_dir / "images").glob("*.jpg"))[:3]:
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / p.name).write_bytes(p.read_bytes())
        out.append(f"img/{p.name}")
    return out


def write(path: Path, records: list, jsonl: bool) -> Path:
    if jsonl:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def parts(sample: dict, turn: int) -> list:
    return [(p["type"], p.get("text") or Path(p["image"]).name) for p in sample["messages"][turn]["content"]]


def test_seed_format(tmp_path, imgs):
    # The seed project's csv2json wrote absolute or CSV-relative paths inside vision tags.
    abs_img = str(tmp_path / imgs[0])
    rec = {"id": "identity_1", "conversations": [
        {"from": "user", "value": f"COCO Yes: <|vision_start|>{abs_img}<|vision_end|>"},
        {"from": "assistant", "value": "A plate of food."}]}
    s = load_samples(write(tmp_path / "seed.json", [rec], jsonl=False))[0]
    assert s["id"] == "identity_1"
    # The seed's training put the image before the prompt; the loader keeps that order.
    assert s["messages"][0]["content"] == [{"type": "image", "image": abs_img}, {"type": "text", "text": "COCO Yes:"}]
    assert s["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "A plate of food."}]}


@pytest.mark.parametrize("jsonl", [False, True])
def test_multi_turn_multi_image_conversations(tmp_path, imgs, jsonl):
    rec = {"images": imgs[:2], "conversations": [
        {"from": "system", "value": "You describe photos."},
        {"from": "human", "value": "Compare <image> with <image>."},
        {"from": "gpt", "value": "Both show food."},
        {"from": "human", "value": "Which is larger?"},
        {"from": "gpt", "value": "The first."}]}
    res = load_samples(write(tmp_path / ("mt.jsonl" if jsonl else "mt.json"), [rec], jsonl))
    s = res[0]
    assert [m["role"] for m in s["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    a, b = (Path(i).name for i in imgs[:2])
    assert parts(s, 1) == [("text", "Compare"), ("image", a), ("text", "with"), ("image", b), ("text", ".")]
    assert all(Path(p["image"]).is_absolute() for m in s["messages"] for p in m["content"] if p["type"] == "image")


def test_images_without_placeholder_go_first(tmp_path, imgs):
    rec = {"image": imgs[0], "conversations": [{"from": "user", "value": "Describe."},
                                               {"from": "assistant", "value": "A bird."}]}
    s = load_samples(write(tmp_path / "d.json", [rec], jsonl=False))[0]
    assert parts(s, 0) == [("image", Path(imgs[0]).name), ("text", "Describe.")]


def test_messages_format_with_string_content_and_image_folder(tmp_path, imgs):
    data_dir = tmp_path / "elsewhere"
    data_dir.mkdir()
    rec = {"messages": [
        {"role": "user", "content": [{"type": "image", "image": imgs[1]}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A pizza."},
        {"role": "user", "content": "And this? <image>"},
        {"role": "assistant", "content": [{"type": "text", "text": "Noodles."}]}], "images": [imgs[2]],
        "references": ["Noodles.", "A bowl of noodles."]}
    s = load_samples(write(data_dir / "m.jsonl", [rec], jsonl=True), image_folder=tmp_path)[0]
    assert parts(s, 1) == [("text", "A pizza.")]
    assert parts(s, 2) == [("text", "And this?"), ("image", Path(imgs[2]).name)]
    assert s["messages"][0]["content"][0]["image"] == str((tmp_path / imgs[1]).resolve())
    assert s["references"] == ["Noodles.", "A bowl of noodles."]


def test_errors_name_file_line_and_field(tmp_path, imgs):
    good = {"image": imgs[0], "conversations": [{"from": "user", "value": "<image>\nHi"},
                                                {"from": "assistant", "value": "Ok"}]}
    bad = [
        {"image": imgs[0], "conversations": [{"from": "robot", "value": "<image>"}, {"from": "assistant", "value": "x"}]},
        {"image": imgs[0], "conversations": [{"from": "user", "value": "<image><image>"},
                                             {"from": "assistant", "value": "x"}]},
        {"image": "img/absent.jpg", "conversations": [{"from": "user", "value": "<image>"},
                                                      {"from": "assistant", "value": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "video", "video": "v.mp4"}]},
                      {"role": "assistant", "content": "x"}]},
        {"image": imgs[0], "conversations": [{"from": "user", "value": "<image>"}, {"from": "assistant", "value": " "}]},
        {"text": "no conversation"},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([json.dumps(good)] + [json.dumps(b) for b in bad] + ["{not json", json.dumps(good)]) + "\n",
                    encoding="utf-8")
    res = load_samples(path)
    assert len(res) == 2 and res.n_records == 9 and res.n_skipped == 7
    assert res.skipped == {"bad_record": 4, "missing_image": 1, "empty_text": 1, "bad_json": 1}
    expected = [
        (2, "conversations[0].from: 'robot' is not one of"),
        (3, "conversations: 2 <image> placeholder(s) but 1 image(s)"),
        (4, "conversations[0]: image not found:"),
        (5, "messages[0].content[0].type: 'video' is not one of text, image"),
        (6, "conversations[1]: assistant turn has no text"),
        (7, "record: needs 'messages' or 'conversations' (keys: text)"),
        (8, "record: not valid JSON"),
    ]
    assert len(res.errors) == len(expected)
    for line, (n, what) in zip(res.errors, expected):
        assert line.startswith(f"{path}: line {n}: {what}"), line
        assert "\n" not in line
    assert res.summary() == f"{path}: loaded 2 samples, skipped 7 (bad_json: 1, bad_record: 4, empty_text: 1, missing_image: 1)"
    with pytest.raises(DataError, match=rf"^{path}: line 2: conversations\[0\].from"):
        load_samples(path, strict=True)


def test_json_list_errors_name_item(tmp_path, imgs):
    path = write(tmp_path / "l.json", [{"messages": [{"role": "user", "content": "hi"}]}], jsonl=False)
    res = load_samples(path)
    assert res.errors == [f"{path}: item 0: messages: has no assistant turn"]


def test_missing_images_kept_when_not_checked(tmp_path):
    rec = {"image": "nowhere.jpg", "conversations": [{"from": "user", "value": "<image>"},
                                                     {"from": "assistant", "value": "x"}]}
    path = write(tmp_path / "n.json", [rec], jsonl=False)
    assert len(load_samples(path)) == 0
    assert load_samples(path, check_images=False)[0]["messages"][0]["content"][0]["image"] == str(tmp_path / "nowhere.jpg")


def test_whole_file_errors(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_samples(tmp_path / "none.json")
    (tmp_path / "broken.json").write_text('[{"a": 1},\n  {oops}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.json: line 2: not valid JSON"):
        load_samples(tmp_path / "broken.json")
    (tmp_path / "obj.json").write_text('"text"', encoding="utf-8")
    with pytest.raises(DataError, match="top level must be a list"):
        load_samples(tmp_path / "obj.json")


def test_json_extension_with_one_object_per_line(tmp_path, imgs):
    rec = {"image": imgs[0], "conversations": [{"from": "user", "value": "<image>"}, {"from": "assistant", "value": "x"}]}
    path = tmp_path / "lines.json"
    path.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n", encoding="utf-8")
    res = load_samples(path)
    assert len(res) == 2 and res[1]["id"] == "lines-2"
