"""evaluate.py end to end on the tiny model: base vs LoRA adapter side by side, a broken image skipped
and counted, Markdown + JSON report, SwanLab offline run, judge prompt and scores saved."""

from __future__ import annotations

import importlib.util
import json

import pytest

from vlft.eval.metrics import score_captions
from vlft.paths import REPO_DIR


def _cli():
    spec = importlib.util.spec_from_file_location("vlft_evaluate_cli", REPO_DIR / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_base_vs_adapter_report(peaked_dir, lora_dir, val_split, tmp_path, fake_openai, capsys):
    out = tmp_path / "eval"
    rc = _cli().main(["--model", str(peaked_dir), "--adapter", str(lora_dir), "--data_path", str(val_split),
                      "--output_dir", str(out), "--max_new_tokens", "8", "--batch_size", "4",
                      "--judge-url", fake_openai.url, "--judge-model", "qwen-judge", "--judge_limit", "2"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.strip()[:200] in cap.out                               # the Markdown is printed too

    assert list(report["systems"]) == ["base", lora_dir.name]
    assert report["n_items"] == 7
    for name, s in report["systems"].items():
        assert s["n_scored"] == 6 and len(s["skipped"]) == 1 and "broken.jpg" in s["skipped"][0]
        assert set(s["metrics"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
        rows = [json.loads(x) for x in (out / f"predictions_{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 6
        # scored against ALL references of each image (the first item carries an extra Chinese one)
        assert len(rows[0]["references"]) >= 6 and rows[0]["references"][-1].startswith("一个男人")
        expected, _ = score_captions([r["prediction"] for r in rows], [r["references"] for r in rows])
        assert s["metrics"] == pytest.approx(expected)
    preds = [report["examples"][0][n] for n in report["systems"]]
    assert preds[0] != preds[1]                                      # the adapter changed the captions

    assert "| CIDEr-D |" in md and f"| metric | base | {lora_dir.name} |" in md and "broken.jpg" in md
    judge = report["judge"]
    assert judge["prompt_template"] and judge["backend"].startswith("openai:qwen-judge")
    assert judge["systems"]["base"]["mean"] == 4 and len(judge["systems"]["base"]["items"]) == 2
    assert judge["systems"]["base"]["items"][0]["prompt"] in [r["body"]["messages"][0]["content"]
                                                             for r in fake_openai.requests]
    assert "| LLM judge (1-5) | 4.00 | 4.00 |" in md
    runs = list((out / "swanlog").glob("run-*"))
    assert runs, "SwanLab offline run folder missing"


def test_bad_adapters_get_one_line(peaked_dir, lora_dir, val_split, tmp_path, capsys):
    rc = _cli().main(["--model", str(peaked_dir), "--adapter", str(tmp_path / "missing"), "--data_path",
                      str(val_split), "--output_dir", str(tmp_path / "e1"), "--report_to", "none"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "adapter folder not found" in err[0]
    assert not (tmp_path / "e1").exists()                            # checked before any model is loaded

    from vlft.adapters.testing import rename_adapter_keys
    stale = rename_adapter_keys(lora_dir, tmp_path / "stale")
    rc = _cli().main(["--model", str(peaked_dir), "--no-base", "--adapter", str(stale), "--adapter", str(lora_dir),
                      "--data_path", str(val_split), "--output_dir", str(tmp_path / "e2"), "--report_to", "none",
                      "--max_new_tokens", "4", "--limit", "2"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "did not apply" in err[0]
    report = json.loads((tmp_path / "e2" / "report.json").read_text(encoding="utf-8"))
    assert report["systems"]["stale"]["error"] and report["systems"][lora_dir.name]["n_scored"] == 2
