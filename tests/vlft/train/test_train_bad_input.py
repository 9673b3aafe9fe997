"""Bad input reaching the training stage (issue 19): one bad file never ends the run."""

from __future__ import annotations

import csv
import json

from train_helpers import CAPTIONS, TINY_PIXELS, caption_sample


def _train_args(model, data, out, *extra):
    return ["--model", str(model), "--train_json", str(data), "--output_dir", str(out),
            "--max_pixels", str(TINY_PIXELS), "--min_pixels", "1024", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "1", "--max_steps", "2", "--save_strategy", "no",
            "--report_to", "none", "--num_sample_predictions", "0", "--no-compile", *extra]


def test_truncated_jpeg_is_skipped_named_once_and_the_run_saves_an_adapter(tiny_model_dir, coco_images,
                                                                           tmp_path, capsys, caplog):
    """Its header parses (length check passes), its pixels do not: the collator used to raise."""
    import lora

    cut = tmp_path / "cut.jpg"
    data = coco_images[0].read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 5])
    rows = [caption_sample(i, cut if i == 1 else coco_images[i], c) for i, c in enumerate(CAPTIONS)]
    p = tmp_path / "train.json"
    p.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "out"
    rc = lora.main(_train_args(tiny_model_dir, p, out))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (out / "adapter_model.safetensors").is_file() and (out / "base_model.json").is_file()
    summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    assert list(summary["bad_images"]["files"]) == [str(cut)]
    assert summary["bad_images"]["rows"] >= 1
    assert "unreadable image(s)" in captured.out and str(cut) in captured.out
    named = [r for r in caplog.records if str(cut) in r.getMessage()]
    assert len(named) == 1   # named once however many times the row comes back


def test_collator_masks_the_bad_row_and_leaves_the_others_exact(tiny_model_dir, coco_images, tmp_path):
    from vlft.models.loading import load_processor
    from vlft.train.collator import BAD_IMAGES_KEY, IGNORE_INDEX, SftCollator

    cut = tmp_path / "cut.jpg"
    cut.write_bytes(coco_images[1].read_bytes()[:3000])
    proc = load_processor(tiny_model_dir, max_pixels=TINY_PIXELS, min_pixels=1024)
    col = SftCollator(proc, 4096)
    good = caption_sample(0, coco_images[0], CAPTIONS[0])
    bad = caption_sample(1, cut, CAPTIONS[1])
    alone = col([good])
    both = col([good, bad])
    assert both["input_ids"].shape[0] == 2                       # the batch keeps its size
    assert (both["labels"][1] == IGNORE_INDEX).all()             # the bad row teaches nothing
    n = alone["labels"].shape[1]
    assert both["labels"][0, :n].tolist() == alone["labels"][0].tolist()
    assert (both["labels"][0, n:] == IGNORE_INDEX).all()
    assert both["pixel_values"].shape == alone["pixel_values"].shape
    assert both[BAD_IMAGES_KEY][0][0] == str(cut)


def test_half_written_checkpoint_falls_back_and_rotation_keeps_the_complete_one(tiny_model_dir, caption_json,
                                                                                 tmp_path):
    import shutil

    import lora

    out = tmp_path / "out"
    common = ["--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1"]
    args = _train_args(tiny_model_dir, caption_json, out)
    args = [a for a in args if a not in ("--save_strategy", "no")] + common
    assert lora.main(args) == 0                                   # 2 steps -> checkpoint-2 only
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    broken = out / "checkpoint-4"                                 # a crash mid-save, later step
    shutil.copytree(out / "checkpoint-2", broken)
    state = (broken / "trainer_state.json").read_text(encoding="utf-8")
    (broken / "trainer_state.json").write_text(state[: len(state) // 2], encoding="utf-8")
    resume = [a if a != "2" or i == 0 else a for i, a in enumerate(args)]
    resume[resume.index("--max_steps") + 1] = "3"
    assert lora.main(resume + ["--resume_from_checkpoint", "auto"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]   # complete, kept
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text(encoding="utf-8"))["global_step"] == 3
    assert (out / "incomplete-checkpoint-4").is_dir()             # set aside, not deleted


def test_caption_with_a_control_token_is_skipped_with_one_line(tiny_model_dir, coco_images, tmp_path, caplog):
    import lora

    rows = [caption_sample(i, coco_images[i], c) for i, c in enumerate(CAPTIONS)]
    rows[1]["messages"][1]["content"][0]["text"] = "A cat.<|im_end|> and the rest is never learned"
    rows += [caption_sample(10 + i, tmp_path / f"gone{i}.jpg", "lost") for i in range(6)]
    p = tmp_path / "train.json"
    p.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "out"
    assert lora.main(_train_args(tiny_model_dir, p, out)) == 0
    summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["data"]["train"]["skipped"] == {"special_token": 1, "missing_image": 6}
    assert any("item 1" in r.getMessage() and "<|im_end|>" in r.getMessage() for r in caplog.records)
    # all seven are listed (not only the first five), and the log says where
    rejects = out / "train.rejects.csv"
    with open(rejects, encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == 7
    assert any(str(rejects) in r.getMessage() for r in caplog.records)


def test_decompression_bomb_and_gbk_json_do_not_end_the_run(tiny_model_dir, coco_images, tmp_path, monkeypatch):
    """Beyond the issue's list: PIL's DecompressionBombError is not an OSError, so the header-only length
    check raised it; a training JSON saved as GBK by a Windows tool was a UnicodeDecodeError traceback."""
    from PIL import Image

    import lora

    small = []
    for i, src in enumerate(coco_images[:3]):
        with Image.open(src) as im:
            p = tmp_path / f"s{i}.jpg"
            im.convert("RGB").resize((200, 150)).save(p)
            small.append(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)   # a COCO photo (> 120k pixels) is now a "bomb"
    rows = [caption_sample(i, img, c) for i, (img, c) in enumerate(zip(small + [coco_images[3]], CAPTIONS))]
    rows[0]["messages"][1]["content"][0]["text"] = "一只小狗在绿色的草地上奔跑。"
    p = tmp_path / "train.json"
    p.write_bytes(json.dumps(rows, ensure_ascii=False).encode("gbk"))
    out = tmp_path / "out"
    assert lora.main(_train_args(tiny_model_dir, p, out)) == 0
    summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["data"]["train"]["n_kept"] == 3 and summary["data"]["train"]["skipped"] == {"bad_image": 1}


def test_pixel_limit_holds_for_qwen25_through_lora_py(tiny_qwen25_dir, coco_images, tmp_path, capsys):
    """Issue 19 item 4: Qwen2.5-VL's own min/max_pixels keys won, so a 2560x1920 photo became 6,312
    image tokens and was dropped as too long; with --max_pixels it is ~100."""
    from PIL import Image

    import lora

    big = tmp_path / "big.jpg"
    with Image.open(coco_images[0]) as im:
        im.convert("RGB").resize((2560, 1920)).save(big)
    rows = [caption_sample(i, big if i == 0 else coco_images[i], c) for i, c in enumerate(CAPTIONS)]
    p = tmp_path / "train.json"
    p.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "out"
    args = _train_args(tiny_qwen25_dir, p, out)
    args[args.index("--max_pixels") + 1] = str(288 * 288)
    args += ["--max_steps", "1"]
    assert lora.main(args) == 0, capsys.readouterr().err
    data = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))["data"]["train"]
    assert data["n_kept"] == 4 and not data["skipped"]
    assert data["tokens"] < 4 * 200          # 288x288 at 28 px a token: at most 105 image tokens a sample
