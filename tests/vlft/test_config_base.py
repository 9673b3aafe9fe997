"""vlft.config: precedence, coercion, repeated list flags, one-line errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from vlft.cli import run_stage
from vlft.config import BaseConfig, ConfigError, field, parse_config, require


@dataclass
class Demo(BaseConfig):
    model_name_or_path: str = field("base", "model folder", aliases=("model",))
    lr: float = field(1e-4, "learning rate")
    steps: int = field(10, "steps")
    images: list[str] = field(doc="images", default_factory=list, aliases=("image",))
    mode: Literal["a", "b"] = field("a", "mode")
    flag: bool = field(False, "a switch")
    verbose: bool = field(False, "more logs")

    def validate(self) -> None:
        super().validate()
        require(self.steps > 0, "steps", "must be positive")


def test_defaults_then_yaml_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 3.0e-4\nsteps: 5\nmodel: from-yaml\n", encoding="utf-8")
    cfg = parse_config(Demo, ["--config", str(recipe), "--steps", "7", "--flag"])
    assert (cfg.model_name_or_path, cfg.lr, cfg.steps, cfg.flag) == ("from-yaml", 3e-4, 7, True)
    assert parse_config(Demo, []).steps == 10


def test_repeated_list_flag_and_several_values_accumulate():
    cfg = parse_config(Demo, ["--image", "a.jpg", "--image", "b.jpg", "c.jpg"])
    assert cfg.images == ["a.jpg", "b.jpg", "c.jpg"]


def test_errors_name_the_field(tmp_path, capsys):
    with pytest.raises(ConfigError, match="steps: must be positive"):
        Demo(steps=0)
    with pytest.raises(ConfigError, match="mode: 'c' is not one of a, b"):
        Demo.from_dict({"mode": "c"})
    with pytest.raises(ConfigError, match="unknown field 'stepz'"):
        Demo.from_dict({"stepz": 1})
    with pytest.raises(ConfigError, match="lr: 'fast' is not a valid float"):
        Demo.from_dict({"lr": "fast"})
    with pytest.raises(SystemExit):
        parse_config(Demo, ["--steps", "-1"])
    assert "steps: must be positive" in capsys.readouterr().err


def test_run_stage_turns_known_errors_into_one_line(capsys):
    def stage(cfg):
        raise FileNotFoundError(f"{cfg.model_name_or_path}: not found")

    assert run_stage(Demo, stage, ["--model", "x"], errors=(FileNotFoundError,)) == (2, None)
    assert capsys.readouterr().err.strip() == "error: x: not found"
    assert run_stage(Demo, lambda cfg: cfg.steps * 2, ["--steps", "4"]) == (0, 8)
