"""evaluate.py: caption the validation split with the base model and each adapter, score, report.

Steps: read the split (skip + count bad records) -> for each system (base, adapters): load,
caption in batches (an unreadable image is skipped + counted), free -> score against all
references -> optional LLM judge -> report.json + report.md (+ predictions_<system>.jsonl),
SwanLab scalars.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from vlft.config import BaseConfig, field, require
from vlft.models.loading import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, free_memory
from vlft.paths import DEFAULT_CAPTION_PROMPT

log = logging.getLogger(__name__)


@dataclass
class EvalConfig(BaseConfig):
    """Score captions (BLEU-1..4, ROUGE-L, CIDEr-D, optional LLM judge) of the base model and adapters."""

    model: str = field("./qwen3-vl-4b-instruct", "base (or merged) model folder",
                       aliases=("model_name_or_path",))
    adapter: list[str] = field(default_factory=list, doc="adapter folder(s) to compare with the base; repeatable")
    base: bool = field(True, "also evaluate the model without adapter (--no-base to skip)")
    data_path: str = field("", "validation split (JSON/JSONL, e.g. output/data/val.json)", aliases=("val_path",))
    image_folder: str | None = field(None, "folder relative image paths in --data_path are under")
    prompt: str = field(DEFAULT_CAPTION_PROMPT, "caption prompt (the one used in training)")
    use_data_prompt: bool = field(False, "keep each sample's own user text instead of --prompt")
    limit: int | None = field(None, "evaluate only the first N images")
    batch_size: int = field(8, "images per generate() call")
    max_new_tokens: int = field(64, "most tokens per caption")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, "largest image area in pixels (same as training)")
    min_pixels: int = field(DEFAULT_MIN_PIXELS, "smallest image area in pixels")
    load_in_4bit: bool | None = field(None, "4-bit NF4 weights (default: on with CUDA, off on CPU)")
    output_dir: str = field("output/eval", "where report.md, report.json and predictions go")
    report_to: Literal["swanlab", "none"] = field("swanlab", "also log the scores to SwanLab")
    swanlab_project: str = field("qwen3-vl-eval", "SwanLab project")
    swanlab_mode: Literal["offline", "local", "online", "disabled"] = field(
        "offline", "SwanLab mode (offline: no login, sync later)")
    judge: Literal["none", "local", "openai"] = field(
        "none", "LLM-as-judge: the local base model, or an OpenAI-compatible endpoint (--judge-url)")
    judge_url: str | None = field(None, "OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                  "(implies --judge openai)")
    judge_model: str | None = field(None, "model name served at --judge-url")
    judge_api_key: str | None = field(None, "API key for --judge-url (default: $OPENAI_API_KEY)")
    judge_limit: int = field(50, "judge at most this many captions per system")
    verbose: bool = field(False, "debug logging")

    def validate(self) -> None:
        super().validate()
        if self.judge_url and self.judge == "none":
            self.judge = "openai"
        require(bool(self.data_path), "data_path", "give the validation split (--data_path)")
        require(self.base or bool(self.adapter), "base", "nothing to evaluate: --no-base and no --adapter")
        require(self.batch_size > 0, "batch_size", "must be positive")
        require(self.max_new_tokens > 0, "max_new_tokens", "must be positive")
        require(self.limit is None or self.limit > 0, "limit", "must be positive")
        require(self.judge != "openai" or bool(self.judge_url), "judge_url",
                "--judge openai needs --judge-url (an OpenAI-compatible /v1 endpoint)")
        require(self.judge != "openai" or bool(self.judge_model), "judge_model",
                "--judge-url needs --judge-model (the model name the endpoint serves)")
        require(self.judge_limit > 0, "judge_limit", "must be positive")
        # checked before minutes of captioning, not when the report is written
        require(not Path(self.output_dir).exists() or Path(self.output_dir).is_dir(), "output_dir",
                f"{self.output_dir} exists and is not a folder")

    @property
    def quant(self) -> str | None:
        return None if self.load_in_4bit is None else ("4bit" if self.load_in_4bit else "none")


@dataclass
class System:
    name: str
    adapter: str | None


def plan_systems(cfg: EvalConfig) -> list[System]:
    """base + one per adapter, with unique readable names; folders checked before any model load."""
    from vlft.adapters.loading import describe_adapter

    systems = [System("base", None)] if cfg.base else []
    used = {s.name for s in systems}
    for a in cfg.adapter:
        info = describe_adapter(a)  # missing / not an adapter -> AdapterLoadError (one line)
        name = Path(a).resolve().name or info.type
        while name in used:
            name += "'"
        used.add(name)
        systems.append(System(name, a))
    return systems


def caption_system(cfg: EvalConfig, system: System, items: list[dict]) -> dict:
    """Load one system, caption ``items``, free it. Returns its report entry plus "rows"."""
    from vlft.adapters.loading import AdapterLoadError, describe_adapter
    from vlft.infer import VLGenerator, predict

    entry: dict = {"model": cfg.model, "adapter": system.adapter,
                   "adapter_type": describe_adapter(system.adapter).type if system.adapter else None}
    try:
        gen = VLGenerator(cfg.model, adapter=system.adapter, precision=cfg.quant,
                          max_pixels=cfg.max_pixels, min_pixels=cfg.min_pixels)
    except AdapterLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return dict(entry, error=str(e), rows=[], skipped=[], n_scored=0, metrics=None)
    t0 = time.perf_counter()
    res = predict(gen, items, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                  desc=f"captioning ({system.name})")
    seconds = time.perf_counter() - t0
    del gen
    free_memory()
    for line in res.errors:
        print(f"skipped: {line}", file=sys.stderr)
    return dict(entry, rows=res.rows, skipped=res.errors, seconds=round(seconds, 2),
                images_per_s=round(len(res.rows) / seconds, 3) if seconds > 0 else None)


def run_judge(cfg: EvalConfig, rows_by_system: dict[str, list[dict]]) -> dict:
    from tqdm.auto import tqdm

    from vlft.eval.judge import JUDGE_PROMPT, JudgeError, LocalJudge, OpenAIJudge, judge_rows

    out: dict = {"prompt_template": JUDGE_PROMPT, "n_per_system": cfg.judge_limit, "systems": {}}
    gen = judge = None
    try:
        if cfg.judge == "openai":
            judge = OpenAIJudge(cfg.judge_url, cfg.judge_model, cfg.judge_api_key)
        else:
            from vlft.infer import VLGenerator
            gen = VLGenerator(cfg.model, precision=cfg.quant, max_pixels=cfg.max_pixels,
                              min_pixels=cfg.min_pixels)
            judge = LocalJudge(gen)
        out["backend"] = judge.name
        total = sum(min(len(r), cfg.judge_limit) for r in rows_by_system.values())
        with tqdm(total=total, desc="judging", leave=False) as bar:
            for name, rows in rows_by_system.items():
                out["systems"][name] = judge_rows(judge, rows[: cfg.judge_limit], progress=bar.update).to_dict()
    except JudgeError as e:
        print(f"error: {e}", file=sys.stderr)
        out["error"] = str(e)
    finally:
        gen = judge = None  # noqa: F841 - drop the local model before returning
        free_memory()
    return out


def evaluate(cfg: EvalConfig) -> dict:
    """Run the whole evaluation; returns the report (also written to ``cfg.output_dir``)."""
    from vlft.eval.metrics import score_captions
    from vlft.eval.report import examples_table, log_swanlab, training_overlap, write_report
    from vlft.infer import items_from_split
    from vlft.utils.io import write_jsonl

    systems = plan_systems(cfg)
    items, load_errors = items_from_split(cfg.data_path, cfg.image_folder,
                                          prompt=None if cfg.use_data_prompt else cfg.prompt)
    no_ref = [it["id"] for it in items if not it["references"]]
    items = [it for it in items if it["references"]]
    load_errors += [f"{i}: no reference caption (nothing to score against)" for i in no_ref]
    for line in load_errors:
        print(f"skipped: {line}", file=sys.stderr)
    if cfg.limit:
        items = items[: cfg.limit]
    if not items:
        raise ValueError(f"{cfg.data_path}: no samples with reference captions to evaluate")

    out_dir = Path(cfg.output_dir)
    report: dict = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_path": str(cfg.data_path), "n_items": len(items), "prompt": cfg.prompt,
        "n_load_skipped": len(load_errors), "load_errors": load_errors,
        "generation": {"max_new_tokens": cfg.max_new_tokens, "temperature": 0.0, "batch_size": cfg.batch_size,
                       "max_pixels": cfg.max_pixels, "min_pixels": cfg.min_pixels, "quant": cfg.quant},
        "systems": {},
    }
    rows_by_system: dict[str, list[dict]] = {}
    for system in systems:
        entry = caption_system(cfg, system, items)
        rows = entry.pop("rows")
        if rows:
            entry["metrics"], per_item = score_captions([r["prediction"] for r in rows],
                                                        [r["references"] for r in rows])
            for r, rl, cd in zip(rows, per_item["ROUGE-L"], per_item["CIDEr-D"]):
                r["ROUGE-L"], r["CIDEr-D"] = round(rl, 6), round(cd, 6)
            rows_by_system[system.name] = rows
            write_jsonl(out_dir / f"predictions_{_slug(system.name)}.jsonl", rows)
        elif not entry.get("error"):
            entry["metrics"] = None
        entry["n_scored"] = len(rows)
        report["systems"][system.name] = entry
    ran = [s for s in report["systems"].values() if not s.get("error")]
    if ran and not any(s["n_scored"] for s in ran):
        skipped = next((line for s in ran for line in s.get("skipped") or []), "")
        raise ValueError(f"{cfg.data_path}: nothing could be scored: all {len(items)} images were skipped"
                         + (f" (first: {skipped})" if skipped else ""))
    if cfg.judge != "none" and rows_by_system:
        report["judge"] = run_judge(cfg, rows_by_system)
    report["split"] = training_overlap(cfg.data_path, items, report["systems"])
    report["examples"] = examples_table(rows_by_system)
    json_path, md_path = write_report(report, out_dir)
    report["paths"] = {"json": str(json_path), "markdown": str(md_path)}
    if cfg.report_to == "swanlab":
        run_name = "eval-" + "-vs-".join(report["systems"])
        report["swanlab_dir"] = str(log_swanlab(report, out_dir, cfg.swanlab_project, cfg.swanlab_mode, run_name))
    return report


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
