"""export.py: merged weights give the adapter's logits (LoRA, DoRA, IA3, and an adapter trained on a
4-bit base merged into the full-precision base); the folder loads with plain transformers; MoE-LoRA
is refused and kept."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from vlft.adapters.loading import load_adapter
from vlft.adapters.testing import (make_random_adapter, peft_config,
                                   perturb_adapter)
from vlft.export import ExportConfig, ExportError, export_merged
from vlft.infer import caption_messages, list_images
from vlft.models.loading import Precision, load_model, load_processor
from vlft.paths import REPO_DIR



@pytest.fixture(scope="module")
def batch(peaked_dir, coco_sample_dir):
    """One image + prompt, as model inputs (vision tower and text both exercised)."""
    from vlft.infer import VLGenerator

    img = str(list_images(coco_sample_dir / "images")[0])
    gen = VLGenerator.from_model(torch.nn.Linear(1, 1), load_processor(peaked_dir))
    return dict(gen.build_inputs([caption_messages([img], "COCO Yes:")]))


FP32 = Precision(device="cpu", dtype=torch.float32, quant="none")


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _export(peaked_dir, adapter, out, dtype="float32"):
    return export_merged(ExportConfig(model=str(peaked_dir), adapter=str(adapter), output=str(out), dtype=dtype))


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3"])
def test_merged_logits_equal_adapter_logits(kind, peaked_dir, batch, tmp_path):
    adapter = make_random_adapter(peaked_dir, tmp_path / kind, kind, seed=2)
    with_adapter = _logits(load_adapter(load_model(peaked_dir, FP32), adapter), batch)
    base = _logits(load_model(peaked_dir, FP32), batch)
    merged_dir = _export(peaked_dir, adapter, tmp_path / "merged")
    merged = _logits(load_model(merged_dir, FP32), batch)
    assert (with_adapter - base).abs().max() > 1e-2           # the adapter does something
    torch.testing.assert_close(merged, with_adapter, atol=2e-4, rtol=1e-4)
    info = json.loads((merged_dir / "export_info.json").read_text())
    assert info["adapter_type"] == kind


def test_qlora_adapter_merges_into_full_precision_base(peaked_dir, batch, tmp_path):
    """Adapter made on the 4-bit (NF4, bitsandbytes CPU) base; export loads the base unquantized."""
    from peft import get_peft_model

    q = load_model(peaked_dir, Precision(device="cpu", dtype=torch.float32, quant="4bit"))
    assert getattr(q, "is_loaded_in_4bit", False)
    peft_model = get_peft_model(q, peft_config("lora"))
    perturb_adapter(peft_model, seed=3)
    peft_model.save_pretrained(tmp_path / "qlora")
    merged_dir = _export(peaked_dir, tmp_path / "qlora", tmp_path / "merged")
    cfg = json.loads((merged_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    merged = _logits(load_model(merged_dir, FP32), batch)
    ref = _logits(load_adapter(load_model(peaked_dir, FP32), tmp_path / "qlora"), batch)
    torch.testing.assert_close(merged, ref, atol=2e-4, rtol=1e-4)


def test_bf16_export_loads_with_plain_transformers(peaked_dir, tmp_path, coco_sample_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter = make_random_adapter(peaked_dir, tmp_path / "lora", "lora", seed=4)
    out = _export(peaked_dir, adapter, tmp_path / "merged-bf16", dtype="bfloat16")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.json", "preprocessor_config.json", "generation_config.json"):
        assert (out / name).is_file(), name
    assert (out / "chat_template.json").read_bytes() == (peaked_dir / "chat_template.json").read_bytes()
    assert not any(p.name.startswith(".") for p in out.parent.iterdir() if p != out)  # no temp folder left
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert not any("lora" in n for n, _ in model.named_parameters())
    proc = AutoProcessor.from_pretrained(out)
    img = list_images(coco_sample_dir / "images")[0]
    msgs = [{"role": "user", "content": [{"type": "image", "url": str(img)}, {"type": "text", "text": "COCO Yes:"}]}]
    inputs = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                      return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 3
    with pytest.raises(ExportError, match="exists"):
        _export(peaked_dir, adapter, out)


def test_moelora_export_is_refused_and_adapter_kept(peaked_dir, tmp_path, capsys):
    from vlft.tuners.moelora import MoeLoraConfig, apply_moelora, save_moelora

    moe = apply_moelora(load_model(peaked_dir, FP32),
                        MoeLoraConfig(r=2, num_experts=2, top_k=1, target_modules=["q_proj"], init_seed=0))
    save_moelora(moe, tmp_path / "moe")
    before = {p.name: p.read_bytes() for p in (tmp_path / "moe").iterdir()}
    spec = importlib.util.spec_from_file_location("vlft_export_cli", REPO_DIR / "export.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rc = cli.main(["--model", str(peaked_dir), "--adapter", str(tmp_path / "moe"), "--output", str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc != 0
    assert len(err) == 1 and "cannot be merged: routing depends on each token; keep using the adapter" in err[0]
    assert not (tmp_path / "out").exists()
    assert {p.name: p.read_bytes() for p in (tmp_path / "moe").iterdir()} == before


def test_export_and_written_files_follow_the_umask(peaked_dir, lora_dir, tmp_path):
    """Issue 19 item 9: temp file + rename gave 0600 files and a 0700 merged folder under umask 022."""
    import os
    import stat

    from vlft.utils.io import write_json
    old = os.umask(0o022)
    try:
        spec = importlib.util.spec_from_file_location("vlft_export_cli", REPO_DIR / "export.py")
        cli = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cli)
        out = tmp_path / "merged"
        assert cli.main(["--model", str(peaked_dir), "--adapter", str(lora_dir), "--output", str(out),
                         "--dtype", "float32"]) == 0
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir()} == {p.name: "0o644" for p in out.iterdir()}


@pytest.mark.parametrize("where", ["adapter", "parent_of_adapter", "inside_model"])
def test_output_overlapping_an_input_is_refused_even_with_overwrite(where, peaked_dir, lora_dir, tmp_path,
                                                                    capsys):
    """Beyond the issue's list: --output ./output --overwrite would have deleted the adapter under it."""
    import shutil

    adapter = tmp_path / "runs" / "lora"
    shutil.copytree(lora_dir, adapter)
    out = {"adapter": adapter, "parent_of_adapter": tmp_path / "runs", "inside_model": peaked_dir / "merged"}[where]
    before = sorted(p.name for p in adapter.iterdir())
    spec = importlib.util.spec_from_file_location("vlft_export_cli", REPO_DIR / "export.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as e:   # a flag error: argparse's exit code 2, one line
        cli.main(["--model", str(peaked_dir), "--adapter", str(adapter), "--output", str(out), "--overwrite"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert e.value.code == 2 and len(err) == 1 and "overlaps" in err[0]
    assert sorted(p.name for p in adapter.iterdir()) == before and not (peaked_dir / "merged").exists()
