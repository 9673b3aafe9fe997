"""csv2json: formats, per-image split, encodings, bad rows; CSV -> JSON -> loader round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from vlft.data import load_samples
from vlft.data.collect import DownloadDataConfig, collect
from vlft.data.convert import Csv2JsonConfig, CsvError, csv_to_json, read_caption_csv, val_path_for
from vlft.data.encoding import detect_encoding
from vlft.paths import DEFAULT_CAPTION_PROMPT, REPO_DIR


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory, coco_sample_dir) -> Path:
    """The demo's first stage on the bundled sample: 17 images, every caption."""
    out = tmp_path_factory.mktemp("csv") / "captions.csv"
    collect(DownloadDataConfig(output=str(out), coco_json=str(coco_sample_dir / "captions_val2017_coco-mini.json"),
                               images=str(coco_sample_dir / "images"), all_captions=True))
    return out


def captions_by_image(csv_path: Path) -> dict[str, list[str]]:
    rows, _ = read_caption_csv(csv_path)
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(str((csv_path.parent / r.image).resolve()), []).append(r.caption)
    return out


def image_of(sample: dict) -> str:
    return next(p["image"] for m in sample["messages"] for p in m["content"] if p["type"] == "image")


@pytest.mark.parametrize("fmt", ["messages", "conversations"])
@pytest.mark.parametrize("ext", [".json", ".jsonl"])
def test_round_trip_through_loader(tmp_path, sample_csv, fmt, ext):
    out = tmp_path / "json" / f"train{ext}"
    res = csv_to_json(Csv2JsonConfig(csv=str(sample_csv), json=str(out), format=fmt, val_ratio=0.2, seed=0))
    truth = captions_by_image(sample_csv)
    n_rows = sum(len(v) for v in truth.values())
    assert res.val_path == tmp_path / "json" / f"val{ext}"
    assert res.n_images == 17 and res.n_val == 3                 # round(17 * 0.2) images held out
    assert sum(res.skipped.values()) == 0

    train, val = load_samples(out), load_samples(res.val_path)
    assert train.n_skipped == 0 and val.n_skipped == 0
    train_imgs = {image_of(s) for s in train}
    val_imgs = {image_of(s) for s in val}
    assert not train_imgs & val_imgs                             # no val image is trained on
    assert train_imgs | val_imgs == set(truth)
    # Train: every caption of every train image is a sample; val: one sample per image + all references.
    assert len(train) == res.n_train == n_rows - sum(len(truth[i]) for i in val_imgs)
    for s in train:
        user, asst = s["messages"]
        assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["image", "text"]
        assert user["content"][1]["text"] == DEFAULT_CAPTION_PROMPT
        assert asst["content"][0]["text"] in truth[image_of(s)]
    for s in val:
        assert s["references"] == truth[image_of(s)]
        assert s["messages"][1]["content"][0]["text"] == truth[image_of(s)][0]
    # The file itself has the documented shape and portable (relative) image paths.
    raw = (json.loads(out.read_text()) if ext == ".json"
           else [json.loads(line) for line in out.read_text().splitlines()])
    if fmt == "conversations":
        assert set(raw[0]) == {"id", "image", "conversations"}
        assert raw[0]["conversations"][0] == {"from": "user", "value": f"<image>\n{DEFAULT_CAPTION_PROMPT}"}
        assert not Path(raw[0]["image"]).is_absolute()
    else:
        assert set(raw[0]) == {"id", "messages"}
        assert not Path(raw[0]["messages"][0]["content"][0]["image"]).is_absolute()
    assert len({r["id"] for r in raw}) == len(raw)


def test_split_is_deterministic_and_seeded(tmp_path, sample_csv):
    def val_images(seed, name):
        r = csv_to_json(Csv2JsonConfig(csv=str(sample_csv), json=str(tmp_path / name / "train.json"),
                                       val_ratio=0.3, seed=seed))
        return sorted(image_of(s) for s in load_samples(r.val_path))
    assert val_images(0, "a") == val_images(0, "b")
    assert val_images(0, "a") != val_images(1, "c")


def test_no_val_file_without_ratio_and_top_k(tmp_path, sample_csv):
    res = csv_to_json(Csv2JsonConfig(csv=str(sample_csv), json=str(tmp_path / "t.json"), top_k=10))
    assert res.val_path is None and res.n_train == 10
    assert not (tmp_path / "t_val.json").exists()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "big5", "utf-16"])
def test_encodings_detected(tmp_path, coco_sample_dir, encoding):
    imgs = sorted((coco_sample_dir / "images").glob("*.jpg"))
    caps = (["一隻鳥在沙灘上飛翔。", "一盤麵條和青花菜。", "桌子上有幾盤食物。"] if encoding == "big5"
            else ["一只鸟在沙滩上飞翔。", "一盘面条和西兰花。", "桌子上有几盘食物。"])
    text = "image_path,caption\n" + "".join(f"{p},{c}\n" for p, c in zip(imgs, caps))
    csv_path = tmp_path / "zh.csv"
    csv_path.write_bytes(text.encode(encoding))
    # GBK is read as its superset gb18030; charset-normalizer names UTF-16 (with BOM) utf_16.
    assert detect_encoding(csv_path.read_bytes()) == {"gbk": "gb18030"}.get(encoding, encoding)
    res = csv_to_json(Csv2JsonConfig(csv=str(csv_path), json=str(tmp_path / "zh.jsonl")))
    got = [s["messages"][1]["content"][0]["text"] for s in load_samples(tmp_path / "zh.jsonl")]
    assert got == caps and res.n_train == 3


def test_bad_rows_skipped_and_counted(tmp_path, coco_sample_dir, caplog):
    img = sorted((coco_sample_dir / "images").glob("*.jpg"))[0]
    csv_path = tmp_path / "mixed.csv"
    csv_path.write_text("Image_Path,Caption,extra\n"
                        f"{img},A good caption.,x\n"
                        f"{img},   ,x\n"
                        f"{tmp_path / 'gone.jpg'},Missing image.,x\n"
                        f"{img},A good caption.,x\n"
                        f"{img},\"A second,  quoted\ncaption.\",x\n", encoding="utf-8")
    res = csv_to_json(Csv2JsonConfig(csv=str(csv_path), json=str(tmp_path / "o.json")))
    assert res.n_train == 2
    assert res.skipped == Counter(empty_caption=1, missing_image=1, duplicate=1)
    assert res.summary().endswith("skipped 3 rows (missing_image: 1, corrupt_image: 0, empty_caption: 1, "
                                  "duplicate: 1)")
    assert any(e.startswith(f"{csv_path}: line 3: caption") for e in res.errors)
    assert any(e.startswith(f"{csv_path}: line 4: image_path") for e in res.errors)
    assert load_samples(tmp_path / "o.json")[1]["messages"][1]["content"][0]["text"] == "A second, quoted caption."


def test_missing_columns_one_clear_error(tmp_path):
    csv_path = tmp_path / "cols.csv"
    csv_path.write_text("picture,label\na.jpg,b\n", encoding="utf-8")
    with pytest.raises(CsvError) as e:
        csv_to_json(Csv2JsonConfig(csv=str(csv_path), json=str(tmp_path / "o.json")))
    msg = str(e.value)
    assert str(csv_path) in msg and "image_path" in msg and "caption" in msg and "found columns: picture, label" in msg
    p = subprocess.run([sys.executable, str(REPO_DIR / "csv2json.py"), "--csv", str(csv_path),
                        "--json", str(tmp_path / "o.json")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr


def test_header_only_csv_is_one_error_and_writes_nothing(tmp_path):
    """Beyond the issue's list: a CSV with only its header wrote an empty train.json and exited 2."""
    csv_path = tmp_path / "header.csv"
    csv_path.write_text("image_path,caption\n", encoding="utf-8")
    p = subprocess.run([sys.executable, str(REPO_DIR / "csv2json.py"), "--csv", str(csv_path),
                        "--json", str(tmp_path / "o.json")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no data rows" in p.stderr and p.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o.json").exists()


def test_val_naming():
    assert val_path_for("d/train.json") == Path("d/val.json")
    assert val_path_for("d/coco_train.jsonl") == Path("d/coco_val.jsonl")
    assert val_path_for("d/data.json") == Path("d/data_val.json")


def test_cli_seed_flags(tmp_path, sample_csv):
    out = tmp_path / "train.json"
    p = subprocess.run([sys.executable, str(REPO_DIR / "csv2json.py"), "--csv", str(sample_csv), "--json", str(out),
                        "--top_k", "5", "--format", "conversations"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"wrote 5 train samples to {out}")
    assert len(load_samples(out)) == 5


def test_verify_images_catches_corrupt_jpeg(tmp_path, coco_sample_dir, truncated_jpeg):
    """Full decoding is the default (issue 19: ~4 ms an image, bench/RESULTS.md); --no-verify-images
    keeps the existence check only."""
    img = sorted((coco_sample_dir / "images").glob("*.jpg"))[0]
    csv_path = tmp_path / "c.csv"
    csv_path.write_text(f"image_path,caption\n{img},Good.\n{truncated_jpeg},Cut.\n{truncated_jpeg},Cut again.\n",
                        encoding="utf-8")
    quick = csv_to_json(Csv2JsonConfig(csv=str(csv_path), json=str(tmp_path / "a.json"), verify_images=False))
    assert quick.n_train == 3                        # existence only: the truncated file exists
    full = csv_to_json(Csv2JsonConfig(csv=str(csv_path), json=str(tmp_path / "b.json")))
    assert full.n_train == 1 and full.skipped == Counter(corrupt_image=2)
    assert "line 3: image_path: unreadable image" in full.errors[0]
