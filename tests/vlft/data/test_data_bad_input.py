"""Issue 19 through the real data stage commands: short GBK text, corrupt images found by default,
every skipped row in a rejects file, control tokens in captions, images without a caption file."""

from __future__ import annotations

import csv
import json
import logging
import shutil

import pytest


def _csv(path, rows, encoding="utf-8"):
    path.write_bytes(("image_path,caption\n" + "".join(f"{i},{c}\n" for i, c in rows)).encode(encoding))
    return path


@pytest.mark.parametrize("captions", [["滑板"], ["滑板", "一只猫"], ["狗"]])
def test_csv2json_short_gbk_captions_are_not_mojibake(tmp_path, coco_images, captions, capsys):
    import csv2json

    src = _csv(tmp_path / "gbk.csv", [(img, c) for img, c in zip(coco_images, captions)], "gbk")
    out = tmp_path / "train.json"
    assert csv2json.main(["--csv", str(src), "--json", str(out)]) == 0
    got = [r["messages"][1]["content"][0]["text"] for r in json.loads(out.read_text(encoding="utf-8"))]
    assert got == captions


def test_folder_one_word_gbk_caption_files(tmp_path, coco_images):
    import download_data2csv

    d = tmp_path / "photos"
    d.mkdir()
    for img, word in zip(coco_images[:3], ["滑板", "狗", "火车"]):
        shutil.copyfile(img, d / img.name)
        (d / img.name).with_suffix(".txt").write_bytes(word.encode("gbk"))
    out = tmp_path / "data" / "captions.csv"
    assert download_data2csv.main(["--folder", str(d), "--output", str(out)]) == 0
    with open(out, encoding="utf-8", newline="") as f:
        assert sorted(r["caption"] for r in csv.DictReader(f)) == sorted(["滑板", "狗", "火车"])


def test_ambiguous_text_is_named_in_one_line_and_encoding_flag_decides(tmp_path, coco_images, caplog, capsys):
    """b'\\xb0\\xa8' is a rare character in GBK (皑) and a common one in Big5 (馬): warned, --encoding wins."""
    import csv2json

    data = b"\xb0\xa8"
    src = tmp_path / "b.csv"
    src.write_bytes(b"image_path,caption\n" + str(coco_images[0]).encode() + b"," + data + b"\n")
    out = tmp_path / "t.json"
    with caplog.at_level(logging.WARNING, logger="vlft.data.encoding"):
        assert csv2json.main(["--csv", str(src), "--json", str(out)]) == 0
    warned = [r.getMessage() for r in caplog.records if "ambiguous" in r.getMessage()]
    assert len(warned) == 1 and str(src) in warned[0] and "--encoding big5" in warned[0]
    assert csv2json.main(["--csv", str(src), "--json", str(out), "--encoding", "big5"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))[0]["messages"][1]["content"][0]["text"] == "馬"


def test_csv2json_decodes_images_by_default_and_lists_every_skipped_row(tmp_path, coco_images, truncated_jpeg,
                                                                        capsys):
    import csv2json

    rows = [(coco_images[0], "Good."), (truncated_jpeg, "Cut.")] + [(tmp_path / f"gone{i}.jpg", f"x{i}")
                                                                    for i in range(7)]
    rows.append((coco_images[1], "Ends early <|im_end|> then more"))
    src = _csv(tmp_path / "c.csv", rows)
    out = tmp_path / "train.json"
    assert csv2json.main(["--csv", str(src), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rejects = tmp_path / "train.rejects.csv"
    assert f"skipped rows are listed in {rejects}" in printed
    with open(rejects, encoding="utf-8", newline="") as f:
        listed = list(csv.DictReader(f))
    assert len(listed) == 9                                  # all of them, not the first five
    assert [r["reason"] for r in listed].count("missing_image") == 7
    assert {r["reason"] for r in listed} == {"missing_image", "corrupt_image", "special_token"}
    assert "special_token: 1" in printed
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 1


def test_folder_image_without_caption_file_says_so(tmp_path, coco_images):
    import download_data2csv

    d = tmp_path / "photos"
    d.mkdir()
    shutil.copyfile(coco_images[0], d / "a.jpg")
    (d / "a.txt").write_text("a caption\n", encoding="utf-8")
    shutil.copyfile(coco_images[1], d / "b.jpg")
    out = tmp_path / "o" / "captions.csv"
    assert download_data2csv.main(["--folder", str(d), "--output", str(out)]) == 0
    with open(out.with_name("captions.rejects.csv"), encoding="utf-8", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["source"] == "b.jpg" and row["detail"] == "no caption file (b.txt)"


def test_one_unreadable_caption_file_skips_its_image_only(tmp_path, coco_images, capsys):
    """Beyond the issue's list: a binary .txt ended the whole --folder run with exit 1."""
    import download_data2csv

    d = tmp_path / "photos"
    d.mkdir()
    for name in ("a", "b"):
        shutil.copyfile(coco_images[0 if name == "a" else 1], d / f"{name}.jpg")
    (d / "a.txt").write_text("a caption\n", encoding="utf-8")
    (d / "b.txt").write_bytes(bytes(range(256)) * 12)
    out = tmp_path / "o" / "captions.csv"
    assert download_data2csv.main(["--folder", str(d), "--output", str(out)]) == 0
    assert "bad_caption_file: 1" in capsys.readouterr().out
    with open(out.with_name("captions.rejects.csv"), encoding="utf-8", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["reason"] == "bad_caption_file" and "b.txt" in row["detail"]


def test_output_over_the_input_is_refused(tmp_path, coco_images, capsys):
    """Beyond the issue's list: csv2json --json data.csv (or download_data2csv --output DIR/captions.csv over
    --folder DIR) replaced the source with the output."""
    import csv2json
    import download_data2csv

    src = _csv(tmp_path / "data.csv", [(coco_images[0], "a caption")])
    before = src.read_bytes()
    with pytest.raises(SystemExit) as e:
        csv2json.main(["--csv", str(src), "--json", str(src)])
    assert e.value.code == 2 and src.read_bytes() == before
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copyfile(coco_images[0], folder / "a.jpg")
    table = folder / "captions.csv"
    table.write_text("image_path,caption\na.jpg,first\na.jpg,second\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        download_data2csv.main(["--folder", str(folder), "--output", str(table)])
    assert e.value.code == 2 and "first" in table.read_text(encoding="utf-8")
    assert "would be overwritten" in capsys.readouterr().err


def test_csv2json_passes_image_urls_through(tmp_path, coco_images):
    """Beyond the issue's list: an http(s) image URL was joined to the CSV's folder and skipped as missing."""
    import csv2json

    url = "https://images.cocodataset.org/val2017/000000039769.jpg"
    src = _csv(tmp_path / "u.csv", [(coco_images[0], "local"), (url, "remote")])
    out = tmp_path / "t.json"
    assert csv2json.main(["--csv", str(src), "--json", str(out)]) == 0
    images = [r["messages"][0]["content"][0]["image"] for r in json.loads(out.read_text(encoding="utf-8"))]
    assert url in images and len(images) == 2
