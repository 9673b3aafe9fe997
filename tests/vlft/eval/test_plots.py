"""Loss curves from the logged history (vlft.eval.plots) and the report's split and tiny-model lines."""

from __future__ import annotations

import json

from PIL import Image

from vlft.eval.plots import PLOT_FILE, SUMMARY_FILE, LossHistory, history_from_log, plot_loss_curves, read_history
from vlft.eval.report import build_markdown, split_line, write_report

LOG = [{"loss": 5.0, "step": 1}, {"loss": 4.0, "step": 2}, {"eval_loss": 6.0, "step": 2},
       {"loss": float("nan"), "step": 3}, {"loss": 3.0, "step": 4}, {"eval_loss": 5.5, "step": 4},
       {"train_runtime": 1.0, "train_loss": 4.0, "step": 4}, {"loss": 1.0}]


def test_history_keeps_finite_losses_by_step(tmp_path):
    h = history_from_log(LOG)
    assert h.train == [(1, 5.0), (2, 4.0), (4, 3.0)] and h.eval == [(2, 6.0), (4, 5.5)]
    assert not read_history(tmp_path)                                  # no training_summary.json: nothing
    (tmp_path / SUMMARY_FILE).write_text("{not json", encoding="utf-8")
    assert not read_history(tmp_path)                                  # unreadable: a warning, nothing


def test_plot_writes_a_png_or_nothing(tmp_path):
    out = plot_loss_curves({"lora": history_from_log(LOG), "moelora": history_from_log(LOG[:3])},
                           tmp_path / "curves.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (700, 400)
    assert plot_loss_curves({"lora": LossHistory()}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def _report(tmp_path, adapter_dir) -> dict:
    return {"data_path": "val.json", "n_items": 2, "prompt": "COCO Yes:", "generation": {"max_new_tokens": 8},
            "systems": {"base": {"model": str(tmp_path / "m"), "metrics": None, "n_scored": 0},
                        "lora": {"model": str(tmp_path / "m"), "adapter": str(adapter_dir), "adapter_type": "lora",
                                 "metrics": None, "n_scored": 0}},
            "split": {"path": "out/val.json", "n_images": 2, "in_training_data": {"base": None, "lora": 0}}}


def test_report_links_the_curves_names_the_split_and_the_tiny_model(tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / SUMMARY_FILE).write_text(json.dumps({"log_history": LOG}), encoding="utf-8")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"tiny_random": True}), encoding="utf-8")
    report = _report(tmp_path, adapter)
    _, md_path = write_report(report, tmp_path / "eval")
    md = md_path.read_text(encoding="utf-8")
    assert (tmp_path / "eval" / PLOT_FILE).is_file() and f"![Training and evaluation loss]({PLOT_FILE})" in md
    assert "- split: `val.json`, 2 images, **held out**: none of them is in the training data of lora" in md
    assert "**the base is the embedded tiny random-weight model**" in md and "not caption quality" in md

    report["split"]["in_training_data"]["lora"] = 2
    assert "in the training data (a fit, not held out): lora: 2 of 2" in build_markdown(report)
    assert "training data is unknown" in split_line({"path": "v.json", "n_images": 2,
                                                     "in_training_data": {"base": None}})
