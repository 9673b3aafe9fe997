"""The evaluation report: one JSON (everything) + one Markdown (side by side), written atomically,
and the same numbers logged to SwanLab."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vlft.eval.metrics import METRICS
from vlft.utils.io import atomic_write, write_json

log = logging.getLogger(__name__)

N_EXAMPLES = 5


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_markdown(report: dict) -> str:
    systems: dict[str, dict] = report["systems"]
    names = list(systems)
    lines = ["# Caption evaluation", ""]
    lines.append(f"- data: `{report['data_path']}` ({report['n_items']} images with references"
                 + (f", {report['n_load_skipped']} records skipped while loading" if report.get("n_load_skipped")
                    else "") + ")")
    lines.append(f"- prompt: `{report['prompt']}`; greedy, max_new_tokens={report['generation']['max_new_tokens']}")
    for n in names:
        s = systems[n]
        what = f"`{s['model']}`" + (f" + {s['adapter_type']} adapter `{s['adapter']}`" if s.get("adapter") else "")
        lines.append(f"- **{n}**: {what}")
    lines.append("- tokenisation: Chinese words (jieba), English PTB-style (lower-case, punctuation removed); "
                 "scores against all references of each image; CIDEr-D as pycocoevalcap (x10 scale)")
    if report.get("split"):
        lines.append(split_line(report["split"]))
    if report.get("tiny_model"):
        lines.append(f"- **the base is the embedded {report['tiny_model']}**: these scores check that the pipeline "
                     "learns (adapters fitting a small sample), not caption quality")
    lines.append("")

    ok = [n for n in names if systems[n].get("metrics")]
    header = "| metric | " + " | ".join(ok) + (" | Δ (last - first) |" if len(ok) > 1 else " |")
    lines += [header, "|" + "---|" * (len(ok) + 1 + (len(ok) > 1))]
    rows = list(METRICS)
    judge = report.get("judge") or {}
    for m in rows:
        vals = [systems[n]["metrics"][m] for n in ok]
        delta = f" | {vals[-1] - vals[0]:+.4f} |" if len(ok) > 1 else " |"
        lines.append(f"| {m} | " + " | ".join(_fmt(v) for v in vals) + delta)
    if judge.get("systems"):
        vals = [judge["systems"].get(n, {}).get("mean") for n in ok]
        both = len(ok) > 1 and None not in (vals[0], vals[-1])
        lines.append("| LLM judge (1-5) | " + " | ".join(_fmt(v, 2) for v in vals)
                     + (f" | {vals[-1] - vals[0]:+.2f} |" if both else (" | - |" if len(ok) > 1 else " |")))
    lines.append("| images scored | " + " | ".join(str(systems[n]["n_scored"]) for n in ok)
                 + (" | |" if len(ok) > 1 else " |"))
    lines.append("| images/s | " + " | ".join(_fmt(systems[n].get("images_per_s"), 2) for n in ok)
                 + (" | |" if len(ok) > 1 else " |"))
    lines.append("")

    for n in names:
        s = systems[n]
        if s.get("error"):
            lines.append(f"- **{n} failed**: {s['error']}")
        if s.get("skipped"):
            lines.append(f"- {n}: skipped {len(s['skipped'])} image(s): " + "; ".join(s["skipped"][:5]))
    if report.get("load_errors"):
        lines.append(f"- data: {len(report['load_errors'])} record(s) skipped: " + "; ".join(report["load_errors"][:5]))
    if judge:
        if judge.get("error"):
            lines.append(f"- judge failed: {judge['error']}")
        else:
            lines.append(f"- judge: {judge['backend']} ({judge['n_per_system']} captions per system; prompt and "
                         "raw answers in report.json)")
            for n, j in judge.get("systems", {}).items():
                if j.get("n_unparsed"):
                    lines.append(f"  - {n}: {j['n_unparsed']} answer(s) without a 1-5 score")
    lines.append("")

    if report.get("loss_plot"):
        lines += ["## Loss curves", "", f"![Training and evaluation loss]({report['loss_plot']})", ""]

    examples = report.get("examples") or []
    if examples:
        lines += ["## Examples", "", "| image | references | " + " | ".join(ok) + " |",
                  "|" + "---|" * (len(ok) + 2)]
        for ex in examples:
            refs = " / ".join(ex["references"][:2])
            lines.append(f"| {_cell(Path(str(ex['image'])).name, 40)} | {_cell(refs)} | "
                         + " | ".join(_cell(ex.get(n) or "(empty)") for n in ok) + " |")
        lines.append("")
    return "\n".join(lines)


def examples_table(rows_by_system: dict[str, list[dict]], n: int = N_EXAMPLES) -> list[dict]:
    """The first ``n`` images every system captioned, with each system's prediction."""
    by_id = {name: {r["id"]: r for r in rows} for name, rows in rows_by_system.items()}
    names = list(by_id)
    if not names:
        return []
    out = []
    for r in rows_by_system[names[0]]:
        if all(r["id"] in by_id[m] for m in names):
            ex = {"id": r["id"], "image": r.get("image"), "references": r["references"]}
            ex.update({m: by_id[m][r["id"]]["prediction"] for m in names})
            out.append(ex)
        if len(out) >= n:
            break
    return out


def split_line(split: dict) -> str:
    """What the scored images are relative to each adapter's training data, in one Markdown line."""
    head = f"- split: `{Path(split['path']).name}`, {split['n_images']} images"
    known = {n: k for n, k in (split.get("in_training_data") or {}).items() if k is not None}
    if not known:
        return head + " (the adapters' training data is unknown: no training_summary.json)"
    if not any(known.values()):
        return head + ", **held out**: none of them is in the training data of " + ", ".join(known)
    return head + "; in the training data (a fit, not held out): " + ", ".join(
        f"{n}: {k} of {split['n_images']}" for n, k in known.items())


def _image_paths(images) -> set[str]:
    images = images if isinstance(images, (list, tuple)) else [images]
    return {str(Path(p).resolve()) for p in images if isinstance(p, (str, Path))}


def training_overlap(data_path: str | Path, items: list[dict], systems: dict[str, dict]) -> dict:
    """How many of the scored images each adapter was trained on, read from the training data named in
    its ``training_summary.json`` (None for the base and for adapters without one)."""
    import json

    from vlft.data.dataset import load_samples
    from vlft.eval.plots import SUMMARY_FILE

    out: dict = {"path": str(data_path), "n_images": len(items), "in_training_data": {}}
    trained_images: dict[tuple, set] = {}
    for name, s in systems.items():
        count = None
        summary_path = Path(s["adapter"]) / SUMMARY_FILE if s.get("adapter") else None
        if summary_path is not None and summary_path.is_file():
            try:
                cfg = json.loads(summary_path.read_text(encoding="utf-8")).get("config") or {}
                key = (cfg["data_path"], cfg.get("image_folder"))
                if key not in trained_images:  # adapters trained on the same file: read it once
                    loaded = load_samples(key[0], image_folder=key[1])
                    trained_images[key] = set().union(*(
                        _image_paths([p.get("image") for m in smp["messages"] for p in m["content"]
                                      if isinstance(p, dict)]) for smp in loaded.samples))
                trained = trained_images[key]
                count = sum(1 for it in items if _image_paths(it.get("image")) & trained)
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: cannot read the training data it names (%s)", summary_path, e)
        out["in_training_data"][name] = count
    return out


def write_loss_plot(report: dict, out_dir: str | Path) -> Path | None:
    """loss_curves.png from the adapters' logged training/eval losses (None: nothing logged)."""
    from vlft.eval.plots import PLOT_FILE, plot_loss_curves, read_history

    histories = {n: read_history(s["adapter"]) for n, s in report["systems"].items() if s.get("adapter")}
    return plot_loss_curves(histories, Path(out_dir) / PLOT_FILE)


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    json_path, md_path = out / "report.json", out / "report.md"
    from vlft.models.tiny import describe_tiny
    report["tiny_model"] = next((d for d in (describe_tiny(s["model"]) for s in report["systems"].values()) if d),
                                None)
    plot = write_loss_plot(report, out)
    if plot is not None:
        report["loss_plot"] = plot.name  # relative: the Markdown sits next to it
    write_json(json_path, report)
    with atomic_write(md_path) as f:
        f.write(build_markdown(report) + "\n")
    return json_path, md_path


def log_swanlab(report: dict, out_dir: str | Path, project: str, mode: str | None, run_name: str) -> Path | None:
    """Scores (and judge means) as SwanLab scalars ``<system>/<metric>``; the Markdown as text."""
    import swanlab

    from vlft.reporting import finish_swanlab, init_swanlab

    cfg = {k: report[k] for k in ("data_path", "prompt", "n_items", "generation")}
    cfg["systems"] = {n: {k: s.get(k) for k in ("model", "adapter", "adapter_type")}
                      for n, s in report["systems"].items()}
    run_dir = init_swanlab(project, run_name, out_dir, mode, cfg)
    try:
        scalars: dict[str, float] = {}
        for name, s in report["systems"].items():
            for m, v in (s.get("metrics") or {}).items():
                scalars[f"{name}/{m}"] = float(v)
            j = ((report.get("judge") or {}).get("systems") or {}).get(name)
            if j and j.get("mean") is not None:
                scalars[f"{name}/judge"] = float(j["mean"])
        swanlab.log(scalars)
        swanlab.log({"report": swanlab.Text(build_markdown(report))})
    finally:
        finish_swanlab()
    return run_dir
