"""Typed configuration shared by every stage.

A stage config is a dataclass whose fields carry their help text (``doc``) and optional
CLI aliases. One function turns it into an argparse parser, and precedence is:
dataclass defaults < ``--config recipe.yaml`` < flags given on the command line.
Validation lives in each config's ``validate()``, called on creation, so a bad value
fails with one line naming the field whether it came from YAML, the CLI or Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, get_args, get_origin

import yaml

from vlft.errors import UserError

C = TypeVar("C", bound="BaseConfig")


class ConfigError(UserError, ValueError):
    """A configuration value is wrong; the message names the field."""


def field(default: Any = dataclasses.MISSING, doc: str = "", *, aliases: Sequence[str] = (),
          default_factory: Any = dataclasses.MISSING, cli: bool = True) -> Any:
    """A dataclass field with help text and CLI aliases (e.g. ``--model`` for ``model_name_or_path``)."""
    meta = {"doc": doc, "aliases": tuple(aliases), "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class BaseConfig:
    """Base for stage configs: validated on creation, loadable from YAML and argv."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # overridden by subclasses
        for f in dataclasses.fields(self):
            _check_literal(self, f)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
        """Fields by name or alias. A section (a field whose type is another BaseConfig) takes a
        mapping (``moelora: {top_k: 1}``) or its own field names at the top level (``top_k: 1``),
        so flat flags and YAML keys keep working when options move into a section."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        alias_to_name = {a.lstrip("-").replace("-", "_"): f.name
                         for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())}
        sections = {n: t for n in names if (t := _section_type(hints[n])) is not None}
        in_section = {k: sec for sec, t in sections.items() for k in _field_keys(t)}
        clean: dict[str, Any] = {}
        section_data: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            k = key.replace("-", "_")
            k = alias_to_name.get(k, k)
            if k in sections and isinstance(value, dict):
                section_data.setdefault(k, {}).update(value)
            elif k not in names and k in in_section:
                section_data.setdefault(in_section[k], {})[k] = value
            elif k not in names:
                raise ConfigError(f"{source}: unknown field '{key}' for {cls.__name__}")
            else:
                clean[k] = _coerce(value, hints[k], f"{source}: {key}")
        for sec, values in section_data.items():
            clean[sec] = sections[sec].from_dict(values, source=source)
        return cls(**clean)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, **overrides: Any) -> C:
        data = load_yaml(path)
        data.update(overrides)
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of field: value")
    return data


# -- argparse -------------------------------------------------------------------------
def build_parser(cls: type[BaseConfig], description: str | None = None,
                 parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """One flag per field (``--name`` and ``--name-with-dashes``) plus its aliases and ``--config``."""
    parser = parser or argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML recipe whose keys are any of the flags below; flags given here win")
    _add_flags(parser, cls)
    return parser


def _add_flags(parser: argparse.ArgumentParser, cls: type[BaseConfig]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        tp = hints[f.name]
        if _section_type(tp) is not None:  # a section: its fields are flags of their own (flat names)
            _add_flags(parser, _section_type(tp))
            continue
        flags = [f"--{f.name}"]
        if "_" in f.name:
            flags.append(f"--{f.name.replace('_', '-')}")
        flags += [a if a.startswith("-") else f"--{a}" for a in f.metadata.get("aliases", ())]
        default = f.default if f.default is not dataclasses.MISSING else None
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS,
                                  help=f"{f.metadata.get('doc', '')} (default: {default!r})".replace('%', '%%'))
        base, _ = _unwrap_optional(tp)
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) is Literal:
            kw["choices"] = list(get_args(base))
        elif get_origin(base) in (list, tuple):
            # `--image a b` and `--image a --image b` both give [a, b].
            kw["nargs"] = "+"
            kw["action"] = "extend"
        else:
            kw["metavar"] = f.name.upper()
        parser.add_argument(*flags, **kw)


def parse_config(cls: type[C], argv: Sequence[str] | None = None, description: str | None = None) -> C:
    """defaults < --config YAML < explicit flags. Errors exit with one line (argparse style)."""
    parser = build_parser(cls, description)
    return config_from_args(cls, vars(parser.parse_args(argv)), parser)


def config_from_args(cls: type[C], ns: dict[str, Any], parser: argparse.ArgumentParser) -> C:
    """The config from parsed flags (``ns`` holds only the flags given, plus ``config``): defaults <
    the YAML recipe < flags. For CLIs whose parser adds flags of their own to ``build_parser``'s."""
    ns = dict(ns)
    recipe = ns.pop("config", None)
    try:
        data = load_yaml(recipe) if recipe else {}
        data.update(ns)
        return cls.from_dict(data, source=recipe or "command line")
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")


# -- helpers ----------------------------------------------------------------------------
def _section_type(tp: Any) -> type[BaseConfig] | None:
    """The BaseConfig subclass of a section field (``Optional[Section]`` too), else None."""
    base, _ = _unwrap_optional(tp)
    return base if isinstance(base, type) and issubclass(base, BaseConfig) else None


def _field_keys(cls: type[BaseConfig]) -> list[str]:
    """Field names and aliases of a section (how its options may appear at the top level)."""
    return [k for f in dataclasses.fields(cls)
            for k in (f.name, *(a.lstrip("-").replace("-", "_") for a in f.metadata.get("aliases", ())))]


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional or base is Any:
            return None
        raise ConfigError(f"{where}: a value is required")
    if isinstance(base, type) and issubclass(base, BaseConfig):
        if isinstance(value, base):
            return value
        if isinstance(value, dict):
            return base.from_dict(value, source=where)
        raise ConfigError(f"{where}: expected a mapping of {base.__name__} fields")
    try:
        if base is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            out = base(value)
            if base is int and isinstance(value, float) and value != int(value):
                raise ValueError(value)
            return out
        if base is str:
            return str(value)
        if base is Path:
            return Path(value)
        if get_origin(base) in (list, tuple):
            (item_tp, *_) = get_args(base) or (str,)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return [_coerce(v, item_tp, where) for v in value]
        if get_origin(base) is Literal:
            choices = get_args(base)
            if value not in choices:
                raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {getattr(base, '__name__', base)}") from None
    return value


def _check_literal(obj: Any, f: dataclasses.Field) -> None:
    tp = typing.get_type_hints(type(obj)).get(f.name)
    base, optional = _unwrap_optional(tp)
    value = getattr(obj, f.name)
    if get_origin(base) is Literal and not (optional and value is None) and value not in get_args(base):
        raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(map(str, get_args(base)))}")


def _plain(v: Any) -> Any:
    if isinstance(v, BaseConfig):
        return v.to_dict()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def require(cond: bool, field_name: str, message: str) -> None:
    """Validation helper: ``require(self.lora_r > 0, 'lora_r', 'must be positive')``."""
    if not cond:
        raise ConfigError(f"{field_name}: {message}")
