"""Several named knowledge bases: each a folder with its own index (and the embedder and chunking
that index records), listed by name in one small JSON file.

    cols = Collections(Path("knowledge_bases.json"), default=Path("multi_agent/knowledge_base"))
    cols.add("papers", Path("~/papers"))
    cols.list()        # [Collection(name, kb_dir)], the default first
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlft.utils.io import write_json

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Collection:
    name: str
    kb_dir: Path


class Collections:
    def __init__(self, path: str | Path, default: Path):
        self.path = Path(path).expanduser()
        self.default = Collection(DEFAULT_NAME, Path(default))

    def _read(self) -> list[Collection]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [Collection(str(c["name"]), Path(c["kb_dir"])) for c in data.get("collections", [])]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def list(self) -> list[Collection]:
        return [self.default] + [c for c in self._read() if c.name != DEFAULT_NAME]

    def get(self, name: str) -> Collection | None:
        return next((c for c in self.list() if c.name == name), None)

    def by_folder(self, kb_dir: Path) -> Collection | None:
        target = Path(kb_dir).expanduser().resolve()
        return next((c for c in self.list() if c.kb_dir.expanduser().resolve() == target), None)

    def add(self, name: str, kb_dir: Path) -> Collection:
        """Add (or re-point) a named collection; names are unique, one line if not usable."""
        name = " ".join(str(name).split())
        if not name or name == DEFAULT_NAME:
            raise ValueError(f"name: {name!r} is empty or reserved")
        kb_dir = Path(kb_dir).expanduser()
        kept = [c for c in self._read() if c.name != name]
        kept.append(Collection(name, kb_dir))
        self._write(kept)
        return Collection(name, kb_dir)

    def remove(self, name: str) -> None:
        """Forget a collection (its folder and index stay on disk)."""
        self._write([c for c in self._read() if c.name != name])

    def _write(self, items: list[Collection]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"collections": [{"name": c.name, "kb_dir": str(c.kb_dir)} for c in items]})
