"""Issue 19 item 3: an adapter made for another base model family is an error in test.py, export.py
and evaluate.py, even when its module names and shapes match; a moved folder is fine; an adapter
without the record (an older one) loads with a warning."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil

import pytest

from vlft.models.identity import IDENTITY_FILE, model_identity, record_identity
from vlft.paths import REPO_DIR


def _stage(name):
    spec = importlib.util.spec_from_file_location(f"vlft_{name}_cli", REPO_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _adapter_with_record(lora_dir, peaked_dir, dest, **changes):
    from transformers import AutoConfig

    shutil.copytree(lora_dir, dest)
    record_identity(dest, AutoConfig.from_pretrained(peaked_dir), peaked_dir)
    rec = json.loads((dest / IDENTITY_FILE).read_text(encoding="utf-8"))
    rec.update(changes)
    (dest / IDENTITY_FILE).write_text(json.dumps(rec), encoding="utf-8")
    return dest


FOREIGN = dict(model_type="qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"],
               name_or_path="Qwen/Qwen2.5-VL-3B-Instruct")


@pytest.mark.parametrize("stage", ["test", "export", "evaluate"])
def test_adapter_of_another_family_is_one_line_and_exit_1(stage, lora_dir, peaked_dir, tmp_path, capsys,
                                                          coco_sample_dir):
    foreign = _adapter_with_record(lora_dir, peaked_dir, tmp_path / "foreign", **FOREIGN)
    img = sorted((coco_sample_dir / "images").glob("*.jpg"))[0]
    args = {"test": ["--image", str(img), "--max_new_tokens", "2"],
            "export": ["--output", str(tmp_path / "merged")],
            "evaluate": ["--no-base", "--data_path", str(_split(tmp_path, img)), "--output_dir",
                         str(tmp_path / "ev"), "--max_new_tokens", "2", "--report_to", "none"]}[stage]
    rc = _stage(stage).main(["--model", str(peaked_dir), "--adapter", str(foreign), *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1
    assert "adapter was made for a qwen2_5_vl model (Qwen/Qwen2.5-VL-3B-Instruct), this model is qwen3_vl" in err[0]
    assert not (tmp_path / "merged").exists()


def _split(tmp_path, img):
    p = tmp_path / "val.json"
    p.write_text(json.dumps([{"id": "a", "messages": [
        {"role": "user", "content": [{"type": "image", "image": str(img)}, {"type": "text", "text": "COCO Yes:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a photo"}]}]}]), encoding="utf-8")
    return p


def test_moved_folder_loads_and_older_adapter_warns(lora_dir, peaked_dir, tmp_path, capsys, caplog,
                                                    coco_sample_dir):
    img = sorted((coco_sample_dir / "images").glob("*.jpg"))[0]
    moved = _adapter_with_record(lora_dir, peaked_dir, tmp_path / "moved", base_path="/elsewhere/qwen3-vl",
                                 name_or_path="/elsewhere/qwen3-vl")
    cli = _stage("test")
    assert cli.main(["--model", str(peaked_dir), "--adapter", str(moved), "--image", str(img),
                     "--max_new_tokens", "2"]) == 0
    old = tmp_path / "old"
    shutil.copytree(lora_dir, old)
    (old / IDENTITY_FILE).unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="vlft.models.identity"):
        assert cli.main(["--model", str(peaked_dir), "--adapter", str(old), "--image", str(img),
                         "--max_new_tokens", "2"]) == 0
    assert any("no base_model.json" in r.getMessage() for r in caplog.records)


def test_identity_of_both_real_families_differs(tiny_model_dir):
    from transformers import AutoConfig

    from vlft.paths import shared_assets_dir
    q3 = model_identity(AutoConfig.from_pretrained(tiny_model_dir))
    assert q3["model_type"] == "qwen3_vl" and q3["dims"]["text.hidden_size"] == 64
    q25_dir = shared_assets_dir("qwen2.5-vl-3b-instruct")
    if q25_dir is None:
        pytest.skip("../shared/assets/qwen2.5-vl-3b-instruct not present")
    q25 = model_identity(AutoConfig.from_pretrained(q25_dir))
    assert q25["model_type"] == "qwen2_5_vl" and q25["dims"]["text.hidden_size"] == 2048
