"""The stage commands as functions: each top-level script (``csv2json.py`` ...) and its ``vlft-*`` entry point
([project.scripts]) call one of these. Each parses flags, runs one library function through
``vlft.cli.run_stage`` (bad input: one ``error:`` line, exit code 2) and prints where the result went."""

from __future__ import annotations

from typing import Sequence

Argv = Sequence[str] | None


def download_model(argv: Argv = None) -> int:
    """``python download_model.py`` / ``vlft-download-model``."""
    from vlft.cli import run_stage
    from vlft.hub import DownloadModelConfig, fetch_model

    rc, path = run_stage(DownloadModelConfig, fetch_model, argv)
    if rc:
        return rc
    print(f"model ready: {path}")
    return 0


def download_data(argv: Argv = None) -> int:
    """``python download_data2csv.py`` / ``vlft-download-data``."""
    from vlft.cli import BAD_INPUT, run_stage
    from vlft.data.collect import DownloadDataConfig, collect

    rc, result = run_stage(DownloadDataConfig, collect, argv)
    if rc:
        return rc
    if sum(result.skipped.values()):
        print(f"rejected rows are listed in {result.rejects}")
    print(result.summary())
    return 0 if result.written else BAD_INPUT  # every record was bad


def csv2json(argv: Argv = None) -> int:
    """``python csv2json.py`` / ``vlft-csv2json``."""
    from vlft.cli import BAD_INPUT, run_stage
    from vlft.data.convert import Csv2JsonConfig, csv_to_json

    rc, result = run_stage(Csv2JsonConfig, csv_to_json, argv)
    if rc:
        return rc
    if result.rejects_path is not None:
        print(f"skipped rows are listed in {result.rejects_path}")
    print(result.summary())
    return 0 if result.n_train else BAD_INPUT  # every row was bad


def infer(argv: Argv = None) -> int:
    """``python test.py`` / ``vlft-infer``."""
    from vlft.cli import run_stage
    from vlft.infer import InferConfig, run_inference

    rc, result = run_stage(InferConfig, run_inference, argv, errors=(ValueError,))
    return rc or result


def evaluate(argv: Argv = None) -> int:
    """``python evaluate.py`` / ``vlft-evaluate``."""
    from vlft.cli import BAD_INPUT, run_stage
    from vlft.eval.run import EvalConfig, evaluate as run_evaluation

    rc, report = run_stage(EvalConfig, run_evaluation, argv, errors=(ValueError,))
    if rc:
        return rc
    print(open(report["paths"]["markdown"], encoding="utf-8").read())
    print(f"report: {report['paths']['markdown']} (and report.json)")
    failed = [n for n, s in report["systems"].items() if s.get("error")]
    return BAD_INPUT if failed else 0  # an adapter that did not load: the others are scored, the run still fails


def export(argv: Argv = None) -> int:
    """``python export.py`` / ``vlft-export``."""
    from vlft.cli import run_stage
    from vlft.export import ExportConfig, export_merged

    rc, out = run_stage(ExportConfig, export_merged, argv)
    if rc:
        return rc
    print(f"merged model written: {out}")
    return 0


def expand(argv: Argv = None) -> int:
    """``python expand_data.py`` / ``vlft-expand``."""
    from vlft.cli import BAD_INPUT, run_stage
    from vlft.data.expand import ExpandConfig, run_expand

    rc, report = run_stage(ExpandConfig, run_expand, argv, errors=(ValueError, OSError))
    if rc:
        return rc
    print(report.summary())
    return 0 if report.written or report.result.unchanged else BAD_INPUT
