"""Issue 19 through evaluate.py: nothing scorable is an error; one-caption-per-record files are
scored per image with all their references."""

from __future__ import annotations

import json

from test_evaluate import _cli


def _record(i, image, caption):
    return {"id": f"r{i}", "messages": [
        {"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": "COCO Yes:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": caption}]}]}


def test_nothing_scorable_exits_non_zero_with_one_line(peaked_dir, tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 cut")
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    split = tmp_path / "val.json"
    split.write_text(json.dumps([_record(0, tmp_path / "a.jpg", "x"), _record(1, tmp_path / "b.jpg", "y")]),
                     encoding="utf-8")
    out = tmp_path / "eval"
    rc = _cli().main(["--model", str(peaked_dir), "--data_path", str(split), "--output_dir", str(out),
                      "--max_new_tokens", "2", "--report_to", "none"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "nothing could be scored" in err[0]
    assert not (out / "report.md").exists()


def test_one_caption_per_record_is_grouped_by_image(peaked_dir, coco_sample_dir, tmp_path, capsys):
    imgs = sorted((coco_sample_dir / "images").glob("*.jpg"))[:2]
    caps = {imgs[0]: [f"first image caption {k}" for k in range(3)],
            imgs[1]: [f"second image caption {k}" for k in range(5)]}
    records = [_record(i, img, c) for i, (img, c) in enumerate((img, c) for img in imgs for c in caps[img])]
    split = tmp_path / "train.json"     # the seed's layout / csv2json without --val-ratio
    split.write_text(json.dumps(records), encoding="utf-8")
    out = tmp_path / "eval"
    rc = _cli().main(["--model", str(peaked_dir), "--data_path", str(split), "--output_dir", str(out),
                      "--max_new_tokens", "2", "--report_to", "none"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["n_items"] == 2 and report["systems"]["base"]["n_scored"] == 2
    rows = [json.loads(x) for x in (out / "predictions_base.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(len(r["references"]) for r in rows) == [3, 5]


def test_output_dir_that_is_a_file_fails_before_any_model_is_loaded(tmp_path, capsys):
    """Beyond the issue's list: the report write failed with a traceback after all the captioning."""
    (tmp_path / "eval").write_text("not a folder", encoding="utf-8")
    (tmp_path / "val.json").write_text("[]", encoding="utf-8")
    import pytest
    with pytest.raises(SystemExit) as e:
        _cli().main(["--model", str(tmp_path / "no-model"), "--data_path", str(tmp_path / "val.json"),
                     "--output_dir", str(tmp_path / "eval")])
    assert e.value.code == 2 and "is not a folder" in capsys.readouterr().err
