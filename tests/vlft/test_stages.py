"""The stage commands (vlft.stages and the training CLI): every stage script answers bad input the same
way, one line naming it and exit code 2, and every stage has an installable entry point.

(expand_data.py takes many sources and skips a bad one with a line; with nothing left it exits 2 too.)"""

from __future__ import annotations

import importlib.util

import pytest

from vlft.errors import BAD_INPUT
from vlft.paths import REPO_DIR

MISSING = "no/such/file"
CASES = {
    "download_data2csv.py": ["--coco-json", f"{MISSING}.json", "--images", MISSING, "--output", "{tmp}/c.csv"],
    "csv2json.py": ["--csv", f"{MISSING}.csv", "--json", "{tmp}/t.json"],
    "lora.py": ["--model", MISSING, "--train_json", f"{MISSING}.json", "--output_dir", "{tmp}/o"],
    "MoeLORA.py": ["--model", MISSING, "--train_json", f"{MISSING}.json", "--output_dir", "{tmp}/o"],
    "test.py": ["--model", MISSING, "--image", f"{MISSING}.jpg"],
    "evaluate.py": ["--model", MISSING, "--data_path", f"{MISSING}.json", "--output_dir", "{tmp}/e"],
    "export.py": ["--model", MISSING, "--adapter", MISSING, "--output", "{tmp}/m"],
    "expand_data.py": ["--source", MISSING, "--output", "{tmp}/x"],
}


def _main(script: str):
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), REPO_DIR / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("script", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(script, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in CASES[script]]
    assert _main(script)(argv) == BAD_INPUT == 2
    out = capsys.readouterr()
    named = [line for line in (out.out + out.err).splitlines() if MISSING in line]
    assert len(named) == 1 and named[0].startswith(("error: ", "skipped ")), named
    assert "Traceback" not in out.err


def test_every_stage_has_an_entry_point_that_runs():
    """[project.scripts] names every stage; each target is the function its top-level script calls."""
    import importlib
    import tomllib

    scripts = tomllib.loads((REPO_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert len(scripts) == 9
    for name, target in scripts.items():
        module, fn = target.split(":")
        with pytest.raises(SystemExit) as e:
            getattr(importlib.import_module(module), fn)(["--help"])
        assert e.value.code == 0, name
