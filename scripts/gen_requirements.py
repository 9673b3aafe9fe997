#!/usr/bin/env python
"""Write requirements.txt from pyproject.toml (the one place dependencies are declared).

    python scripts/gen_requirements.py          # rewrite requirements.txt
    python scripts/gen_requirements.py --check  # exit 1 when requirements.txt is out of date

requirements.txt is for people who install with ``pip install -r requirements.txt`` (as the seed
project told them to): the core dependencies plus the ``train`` and ``app`` extras, i.e. what
``make install`` puts into .venv apart from the test tools (``dev``) and the CUDA-only ``gpu`` extra.
tests/scripts/test_gen_requirements.py fails when the file and pyproject.toml disagree.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXTRAS = ("train", "app")

HEADER = """\
# Generated from pyproject.toml by scripts/gen_requirements.py: do not edit by hand.
# Core dependencies + the extras: {extras}. `make install` installs the same (plus the test tools)
# into .venv and is the recommended way.
#
# torch's build: `pip install -r requirements.txt` takes torch from PyPI, which on Linux is the CUDA
# build (about 2.5 GB of CUDA libraries even without a GPU). scripts/torch_spec.sh prints the right
# pip arguments for this machine (CUDA wheels with an NVIDIA GPU, else the CPU-only wheels from
# https://download.pytorch.org/whl/cpu), and `make install` uses it. By hand, on a machine without a GPU:
#   pip install $(sh scripts/torch_spec.sh) -r requirements.txt
"""


def load_pyproject(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


def requirement_name(spec: str) -> str:
    """'transformers>=5.20,<6' -> 'transformers' (for de-duplication across extras)."""
    name = spec
    for sep in "<>=!~;[ (":
        name = name.split(sep, 1)[0]
    return name.strip().lower().replace("_", "-")


def render(pyproject: dict, extras: tuple[str, ...] = EXTRAS) -> str:
    """The requirements.txt text: one section per group, each requirement once (first group wins)."""
    project = pyproject["project"]
    groups = [("core", project.get("dependencies", []))]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise KeyError(f"pyproject.toml: no optional-dependencies group {extra!r}")
        groups.append((f"extra: {extra}", optional[extra]))
    seen: set[str] = set()
    lines = [HEADER.format(extras=", ".join(extras))]
    for title, specs in groups:
        fresh = [s for s in specs if requirement_name(s) not in seen]
        seen.update(requirement_name(s) for s in fresh)
        if fresh:
            lines.append(f"# {title}")
            lines.extend(fresh)
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    parser.add_argument("--output", type=Path, default=REPO / "requirements.txt")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args(argv)
    text = render(load_pyproject(args.pyproject))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output}: out of date with {args.pyproject}; run python scripts/gen_requirements.py",
                  file=sys.stderr)
            return 1
        return 0
    write_atomic(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
