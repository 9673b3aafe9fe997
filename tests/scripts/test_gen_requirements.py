"""requirements.txt stays what scripts/gen_requirements.py makes of pyproject.toml."""

from __future__ import annotations

import importlib.util

from vlft.paths import REPO_DIR


def _gen():
    spec = importlib.util.spec_from_file_location("gen_requirements", REPO_DIR / "scripts" / "gen_requirements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_requirements_txt_in_sync_with_pyproject():
    gen = _gen()
    expected = gen.render(gen.load_pyproject(REPO_DIR / "pyproject.toml"))
    current = (REPO_DIR / "requirements.txt").read_text(encoding="utf-8")
    assert current == expected, "requirements.txt is out of date: run python scripts/gen_requirements.py"
    assert gen.main(["--check"]) == 0


def test_render_takes_core_and_extras_once_and_says_how_torch_is_chosen(tmp_path, capsys):
    gen = _gen()
    pyproject = {"project": {"dependencies": ["torch>=2.6", "Pillow>=10"],
                             "optional-dependencies": {"train": ["jieba>=0.42", "openai>=1.50"],
                                                       "app": ["jieba>=0.42", "openai>=1.50", "mcp>=2.3,<3"],
                                                       "dev": ["pytest>=8"]}}}
    text = gen.render(pyproject)
    reqs = [x for x in text.splitlines() if x and not x.startswith("#")]
    assert reqs == ["torch>=2.6", "Pillow>=10", "jieba>=0.42", "openai>=1.50", "mcp>=2.3,<3"]
    assert "scripts/torch_spec.sh" in text and "download.pytorch.org/whl/cpu" in text

    stale = tmp_path / "requirements.txt"
    stale.write_text("torch\n", encoding="utf-8")
    assert gen.main(["--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert gen.main(["--output", str(stale)]) == 0 and gen.main(["--check", "--output", str(stale)]) == 0
