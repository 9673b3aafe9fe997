"""Plain records shared by the index, the search pipeline and callers (agents, GUI, MCP)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Chunk:
    vid: int                 # int64 id in the vector store; never reused within one index
    chunk_id: str            # "<source>#<n>", unique in the index
    source: str              # path relative to kb_dir, '/' separators
    page: int | None         # 1-based PDF page, None for text files
    start: int               # char offsets into the page (or whole file) text: text == page[start:end]
    end: int
    text: str
    tokens: list[str] = field(default_factory=list, repr=False)  # BM25 tokens, cached for rebuilds

    def to_json(self) -> dict:
        return dict(self.__dict__)  # shallow: asdict() deep-copies every token list (3 s per 10k chunks)


@dataclass
class Hit:
    chunk_id: str
    text: str
    source: str
    page: int | None
    start: int
    end: int
    score: float                                   # final: rerank score if reranked, else RRF
    scores: dict[str, float | None] = field(default_factory=dict)  # bm25 / dense / rrf / rerank
    rank: int = 0                                  # 1-based

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def citation(self) -> str:
        return f"{self.source}" + (f" p.{self.page}" if self.page else "")


@dataclass
class IndexReport:
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    chunks: int = 0          # chunks in the index after this run
    embedded: int = 0        # chunks embedded by this run (0 when nothing changed)
    version: str | None = None
    seconds: float = 0.0

    @property
    def touched(self) -> int:
        return self.added + self.changed + self.deleted

    def summary(self) -> str:
        s = (f"{self.added} added, {self.changed} changed, {self.deleted} deleted, {self.unchanged} unchanged, "
             f"{len(self.skipped)} skipped; {self.chunks} chunks ({self.embedded} embedded) in {self.seconds:.1f}s")
        return s
