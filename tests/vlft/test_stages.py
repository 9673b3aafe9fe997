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


def test_a_finished_command_exits_at_once_with_its_code_after_the_atexit_handlers(tmp_path):
    """vlft.cli.exit_now: the exit code, what was printed and the atexit handlers (logging, SwanLab,
    multiprocessing) survive skipping the interpreter's teardown; objects' finalizers do not run."""
    import subprocess
    import sys

    code = ("import atexit, logging, sys\n"
            "from vlft.cli import exit_now\n"
            f"logging.basicConfig(filename={str(tmp_path / 'run.log')!r})\n"
            "logging.getLogger('x').warning('logged')\n"
            "atexit.register(print, 'handler ran')\n"
            "class Slow:\n"
            "    def __del__(self): print('teardown ran')\n"
            "keep = Slow()\n"
            "print('work done', end='')\n"
            "exit_now(3)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR, capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr
    assert p.stdout == "work donehandler ran\n"  # teardown ran would follow a normal exit
    assert "logged" in (tmp_path / "run.log").read_text()


@pytest.mark.parametrize("script", ["lora.py", "MoeLORA.py", "csv2json.py", "download_data2csv.py", "download_model.py",
                                    "evaluate.py", "expand_data.py", "export.py", "test.py"])
def test_every_stage_script_ends_through_exit_now(script):
    text = (REPO_DIR / script).read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":\n    from vlft.cli import exit_now\n    exit_now(main())' in text
