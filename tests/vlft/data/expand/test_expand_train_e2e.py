"""Documents -> expand_data.py --to train -> lora.py trains on the result (image-caption and text-only Q&A
samples in one file), and the local generator (the tiny Qwen3-VL) end to end with its cache."""

from __future__ import annotations

import json

import pytest

import expand_data
from vlft.data import load_samples
from vlft.data.expand import ExpandConfig, Expander
from vlft.data.expand.generate import ScriptedGenerator

TINY_PIXELS = 64 * 64


def _qa(p):
    if "pier" in p.text and "Passage:" in p.text:
        return "Q: When was the pier rebuilt?\nA: The pier was rebuilt in 2019 after the storm."
    return None


@pytest.mark.slow
def test_expanded_data_trains_with_lora(docs_dir, tmp_path, tiny_model_dir, capsys):
    train = tmp_path / "train.json"
    assert expand_data.main(["--source", str(docs_dir), "--output", str(tmp_path / "out"), "--to", "train",
                             "--train_json", str(train)]) == 0
    # text-only Q&A from a (scripted) generator into the same training file
    cfg = ExpandConfig(source=[str(docs_dir / "plain.txt")], output=tmp_path / "out-qa", to="train", train_json=train)
    rep = Expander(cfg, generator=ScriptedGenerator(_qa)).run()
    assert rep.appended == (1, 0)
    samples = load_samples(train)
    assert len(samples) == 6 and sum(all(c["type"] == "text" for c in s["messages"][0]["content"])
                                     for s in samples) == 1
    import lora
    out = tmp_path / "lora"
    rc = lora.main(["--model", str(tiny_model_dir), "--train_json", str(train), "--output_dir", str(out),
                    "--max_steps", "3", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                    "--max_pixels", str(TINY_PIXELS), "--logging_steps", "1", "--save_strategy", "no",
                    "--report_to", "none", "--num_sample_predictions", "0"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["global_step"] == 3
    assert (out / "adapter_config.json").is_file()


@pytest.mark.slow
def test_local_generator_tiny_model_and_cache(docs_dir, tmp_path, tiny_model_dir, capsys):
    args = ["--source", str(docs_dir / "report.pdf"), "--output", str(tmp_path / "out"), "--generator", "local",
            "--model", str(tiny_model_dir), "--max_new_tokens", "8", "--batch_size", "4"]
    assert expand_data.main(args) == 0
    first = capsys.readouterr().out
    # 2 VQA prompts (captioned figures) + 2 text chunks (page 3's one line is too short to ask about)
    assert "generation: 4 prompts run, 0 from the cache, 0 failed, 4 gave no Q&A pair" in first
    # the random tiny model writes no "Q: ... A: ..." pairs: only the document captions become samples
    assert "samples: 2 (2 image-caption" in first
    (tmp_path / "out" / "sync_state.json").unlink()   # force extraction again: generation comes from the cache
    assert expand_data.main(args) == 0
    assert "generation: 0 prompts run, 4 from the cache" in capsys.readouterr().out


def test_a_batch_of_only_text_samples_trains(tiny_model_dir):
    """Text-only Q&A samples (no image anywhere in the batch) go through the training collator and the model."""
    from transformers import AutoModelForImageTextToText

    from vlft.models.loading import load_processor
    from vlft.train.collator import SftCollator

    s = {"id": "a", "messages": [{"role": "user", "content": [{"type": "text", "text": "When was the pier rebuilt?"}]},
                                 {"role": "assistant", "content": [{"type": "text", "text": "In 2019."}]}]}
    batch = SftCollator(load_processor(tiny_model_dir), 512)([s, s])
    assert "pixel_values" not in batch and (batch["labels"] != -100).sum() > 0
    loss = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)(**batch).loss
    loss.backward()
    assert loss.item() > 0
