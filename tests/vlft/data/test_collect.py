"""download_data2csv: COCO JSON and folder sources, bad inputs, rejects file, resume, offline failure."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from vlft.data.collect import CollectError, DownloadDataConfig, collect, rejects_path
from vlft.data.images import image_problem
from vlft.paths import REPO_DIR

SUMMARY = re.compile(r"^written (\d+), skipped (\d+) \(missing_image: (\d+), corrupt_image: (\d+), "
                     r"empty_caption: (\d+), duplicate: (\d+)\)$")


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run(tmp_path, **kw):
    cfg = DownloadDataConfig(output=str(tmp_path / "out" / "captions.csv"),
                             image_dir=str(tmp_path / "out" / "images"), **kw)
    return cfg, collect(cfg)


def expected_coco(ann: dict, images_dir: Path, all_captions: bool) -> tuple[int, int]:
    """(written, missing) computed from the annotation file and what is on disk."""
    caps = Counter(a["image_id"] for a in ann["annotations"])
    written = missing = 0
    for e in ann["images"]:
        n = caps[e["id"]] if all_captions else 1
        if (images_dir / e["file_name"]).is_file():
            written += n
        else:
            missing += n
    return written, missing


@pytest.mark.parametrize("all_captions", [False, True])
def test_coco_json_sample_skips_absent_images(tmp_path, coco_sample_dir, coco_annotations, all_captions):
    cfg, res = run(tmp_path, coco_json=str(coco_sample_dir / "captions_val2017_coco-mini.json"),
                   images=str(coco_sample_dir / "images"), all_captions=all_captions)
    want_written, want_missing = expected_coco(coco_annotations, coco_sample_dir / "images", all_captions)
    assert want_missing > 0 and want_written > 0          # the sample really has absent images
    assert res.written == want_written
    assert res.skipped == Counter(missing_image=want_missing)
    m = SUMMARY.match(res.summary())
    assert m and int(m[1]) == want_written and int(m[3]) == want_missing

    rows = read_rows(res.output)
    assert len(rows) == want_written
    out_dir = res.output.parent
    for r in rows:
        assert not Path(r["image_path"]).is_absolute() and r["image_path"].startswith("images/")
        assert image_problem(out_dir / r["image_path"]) is None and r["caption"].strip()
    images = {r["image_path"] for r in rows}
    assert len(images) == 17 and (len(rows) == 17) == (not all_captions)
    rejects = read_rows(rejects_path(res.output))
    assert len(rejects) == want_missing and {r["reason"] for r in rejects} == {"missing_image"}
    assert all("file not found" in r["detail"] for r in rejects)


def test_folder_source_counts_every_bad_input(tmp_path, caption_folder):
    _, res = run(tmp_path, folder=str(caption_folder), all_captions=True)
    assert res.skipped == Counter(missing_image=1, corrupt_image=2, empty_caption=1, duplicate=1)
    assert res.written == 3 * 2 + 1
    rows = read_rows(res.output)
    assert "images/sub__" + sorted(p.name for p in (caption_folder / "sub").glob("*.jpg"))[0] in \
        {r["image_path"] for r in rows}                   # nested files get flat, unique names
    rejects = read_rows(rejects_path(res.output))
    by_reason = {r["reason"]: r for r in rejects}
    assert "truncated" in by_reason["corrupt_image"]["detail"] or "notimage" in by_reason["corrupt_image"]["detail"]
    assert by_reason["missing_image"]["source"] == "orphan.txt"
    assert by_reason["duplicate"]["caption"] == "same words"
    assert res.summary() == ("written 7, skipped 5 (missing_image: 1, corrupt_image: 2, "
                             "empty_caption: 1, duplicate: 1)")
    # Bad images were never copied into the output folder.
    assert not any("truncated" in p.name or "notimage" in p.name for p in (tmp_path / "out" / "images").iterdir())


def test_folder_one_caption_per_image_by_default(tmp_path, caption_folder):
    _, res = run(tmp_path, folder=str(caption_folder))
    assert res.written == 4
    assert res.skipped == Counter(missing_image=1, corrupt_image=2, empty_caption=1)


def test_max_samples_caps_rows(tmp_path, coco_sample_dir):
    _, res = run(tmp_path, coco_json=str(coco_sample_dir / "captions_val2017_coco-mini.json"),
                 images=str(coco_sample_dir / "images"), all_captions=True, max_samples=7)
    assert res.written == 7 and len(read_rows(res.output)) == 7


def test_rerun_resumes_and_repairs(tmp_path, coco_sample_dir):
    kw = dict(coco_json=str(coco_sample_dir / "captions_val2017_coco-mini.json"),
              images=str(coco_sample_dir / "images"))
    _, first = run(tmp_path, **kw)
    assert first.images_saved == 17 and first.images_reused == 0
    saved = sorted((tmp_path / "out" / "images").glob("*.jpg"))
    saved[0].write_bytes(saved[0].read_bytes()[:500])      # damaged after the first run
    _, second = run(tmp_path, **kw)
    assert second.images_reused == 16 and second.images_saved == 1
    assert image_problem(saved[0]) is None
    assert read_rows(first.output) == read_rows(second.output)


def test_folder_with_gbk_captions_csv(tmp_path, coco_images):
    d = tmp_path / "src"
    (d / "images").mkdir(parents=True)
    for p in coco_images[:2]:
        (d / "images" / p.name).write_bytes(p.read_bytes())
    text = (f"image,caption\n{coco_images[0].name},一只鸟在沙滩上飞翔。\n"
            f"{coco_images[1].name},一盘面条和西兰花。\nmissing.jpg,不存在的图片\n{coco_images[1].name},\n")
    (d / "captions.csv").write_bytes(text.encode("gbk"))
    _, res = run(tmp_path, folder=str(d), all_captions=True)
    assert res.written == 2
    assert res.skipped == Counter(missing_image=1, empty_caption=1)
    rows = read_rows(res.output)
    assert [r["caption"] for r in rows] == ["一只鸟在沙滩上飞翔。", "一盘面条和西兰花。"]


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(CollectError, match=r"annotation file not found"):
        run(tmp_path, coco_json=str(tmp_path / "nope.json"), images=str(tmp_path))
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(CollectError, match=r"x.json: not a COCO captions file"):
        run(tmp_path, coco_json=str(tmp_path / "x.json"), images=str(tmp_path))


def test_cli_demo_command_and_offline_modelscope(tmp_path):
    out = tmp_path / "data" / "captions.csv"
    cmd = [sys.executable, str(REPO_DIR / "download_data2csv.py"),
           "--coco-json", str(REPO_DIR / "data/coco_sample/captions_val2017_coco-mini.json"),
           "--images", str(REPO_DIR / "data/coco_sample/images"), "--output", str(out),
           "--image-dir", str(tmp_path / "data" / "images"), "--all-captions"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert SUMMARY.match(p.stdout.strip().splitlines()[-1])

    # Default source is ModelScope: here (no network) it must fail fast with one line.
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(REPO_DIR / "download_data2csv.py"), "--output", str(tmp_path / "ms.csv")],
                       capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 20
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "modelscope/coco_2014_caption" in p.stderr and "--coco-json" in p.stderr


def test_modelscope_rows_through_the_real_path(tmp_path, monkeypatch, coco_images):
    """MsDataset is the outside service: a stand-in yields rows shaped like coco_2014_caption's."""
    import types

    from PIL import Image

    from vlft import hub

    pil = Image.open(coco_images[0])
    rows = [{"image_id": 1, "caption": "A PIL image.", "image": pil},
            {"image_id": 1, "caption": "Second caption of image 1.", "image": pil},
            {"image_id": 2, "caption": "Undecoded bytes.", "image": {"bytes": coco_images[1].read_bytes(), "path": None}},
            {"image_id": 3, "caption": "Broken bytes.", "image": {"bytes": b"\xff\xd8 not really", "path": None}},
            {"image_id": 4, "caption": "", "image": pil},
            {"image_id": 5, "caption": "No image.", "image": None}]
    seen = {}

    class FakeMsDataset:
        @staticmethod
        def load(name, **kw):
            seen.update(name=name, **kw)
            return iter(rows)

    monkeypatch.setattr(hub, "probe", lambda *a, **k: None)
    monkeypatch.setitem(sys.modules, "modelscope.msdatasets", types.SimpleNamespace(MsDataset=FakeMsDataset))
    _, res = run(tmp_path, max_samples=10)
    assert seen == {"name": "modelscope/coco_2014_caption", "subset_name": "coco_2014_caption",
                    "split": "train", "use_streaming": True}
    assert [r["caption"] for r in read_rows(res.output)] == ["A PIL image.", "Undecoded bytes."]
    assert res.skipped == Counter(corrupt_image=2, empty_caption=1)
    assert not (tmp_path / "out" / "images" / "3.jpg").exists()
