"""Conversations that last: every turn of a conversation kept in one local SQLite file.

    store = ConversationStore(Path("conversations.sqlite"))
    cid = store.create("MoE-LoRA questions")
    store.append(cid, trace)                 # a TurnTrace, as JSON
    store.list()                             # newest first: id, title, created, updated, turns
    store.turns(cid)                         # TurnTraces again (evidence as Hits)
    store.rename(cid, "..."); store.truncate(cid, keep=2); store.delete(cid)

The Assistant writes each finished turn here when it has a store (the desktop app gives it one);
SQLite keeps every write atomic, so a crash never leaves half a turn.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from multi_agent.agents.trace import TurnTrace

TITLE_CHARS = 80
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    kb TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS turns (
    conversation INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, trace TEXT NOT NULL, PRIMARY KEY (conversation, idx));
"""


@dataclass
class ConversationInfo:
    id: int
    title: str
    created: float      # time.time()
    updated: float
    turns: int
    kb: str = ""        # the knowledge-base folder the conversation uses ("" = the default)


def title_from(question: str) -> str:
    """A conversation's default title: its first question on one line, shortened."""
    text = " ".join(question.split())
    return text if len(text) <= TITLE_CHARS else text[:TITLE_CHARS - 1] + "…"


class ConversationStore:
    """Thread-safe (one connection, one lock): the app writes from its worker threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(conversations)")}
        if "kb" not in columns:                  # a store written before collections existed
            self._db.execute("ALTER TABLE conversations ADD COLUMN kb TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, title: str = "", kb: str | Path = "") -> int:
        now = time.time()
        with self._lock:
            cur = self._db.execute("INSERT INTO conversations (title, created, updated, kb) VALUES (?, ?, ?, ?)",
                                   (title_from(title), now, now, str(kb)))
            return int(cur.lastrowid)

    def list(self) -> list[ConversationInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id, c.title, c.created, c.updated, COUNT(t.idx), c.kb FROM conversations c "
                "LEFT JOIN turns t ON t.conversation = c.id GROUP BY c.id ORDER BY c.updated DESC, c.id DESC"
            ).fetchall()
        return [ConversationInfo(*r) for r in rows]

    def get(self, cid: int) -> ConversationInfo | None:
        return next((c for c in self.list() if c.id == cid), None)

    def rename(self, cid: int, title: str) -> None:
        title = title_from(title)
        if not title:
            raise ValueError("title: empty")
        with self._lock:
            self._db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, cid))

    def set_kb(self, cid: int, kb: str | Path) -> None:
        with self._lock:
            self._db.execute("UPDATE conversations SET kb = ? WHERE id = ?", (str(kb), cid))

    def delete(self, cid: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM conversations WHERE id = ?", (cid,))

    def turns(self, cid: int) -> list[TurnTrace]:
        with self._lock:
            rows = self._db.execute("SELECT trace FROM turns WHERE conversation = ? ORDER BY idx", (cid,)).fetchall()
        return [TurnTrace.from_dict(json.loads(r[0])) for r in rows]

    def append(self, cid: int, trace: TurnTrace) -> None:
        data = json.dumps(trace.to_dict(), ensure_ascii=False, default=str)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            (n,) = self._db.execute("SELECT COUNT(*) FROM turns WHERE conversation = ?", (cid,)).fetchone()
            self._db.execute("INSERT INTO turns (conversation, idx, trace) VALUES (?, ?, ?)", (cid, n, data))
            self._db.execute("UPDATE conversations SET updated = ?, title = CASE WHEN title = '' THEN ? "
                             "ELSE title END WHERE id = ?", (time.time(), title_from(trace.question), cid))

    def truncate(self, cid: int, keep: int) -> None:
        """Drop every turn from index ``keep`` on (regenerate, edit and resend)."""
        with self._lock:
            self._db.execute("DELETE FROM turns WHERE conversation = ? AND idx >= ?", (cid, keep))
