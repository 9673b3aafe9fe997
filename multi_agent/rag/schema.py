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
class IndexProgress:
    """One progress report of an indexing run (after each file loads and each embedding batch)."""

    files_done: int          # files finished (embedded or skipped)
    files_total: int         # files this run has to process
    chunks_done: int         # chunks embedded so far
    chunks_known: int        # chunks found so far (grows as files are read)
    path: str                # the file being worked on (display form), "" at the end
    stage: str               # loading | embedding | done
    fraction: float = 0.0    # 0..1 over files, moving within files as their chunks are embedded

    def text(self) -> str:
        if self.stage == "done":
            return f"{self.files_done}/{self.files_total} files, {self.chunks_done} chunks embedded"
        return (f"{self.files_done}/{self.files_total} files, {self.chunks_done}/{self.chunks_known} chunks"
                + (f" · {self.path}" if self.path else ""))


@dataclass
class IndexReport:
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): documents not indexed
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not documents (counted)
    cancelled: bool = False  # stopped early; the files finished so far are committed
    chunks: int = 0          # chunks in the index after this run
    embedded: int = 0        # chunks embedded by this run (0 when nothing changed)
    version: str | None = None
    seconds: float = 0.0

    @property
    def touched(self) -> int:
        return self.added + self.changed + self.deleted

    def summary(self) -> str:
        s = (f"{self.added} added, {self.changed} changed, {self.deleted} deleted, {self.unchanged} unchanged, "
             f"{len(self.skipped)} skipped, {len(self.ignored)} not documents; "
             f"{self.chunks} chunks ({self.embedded} embedded) in {self.seconds:.1f}s")
        return s + (" (stopped: the files finished so far are kept)" if self.cancelled else "")
