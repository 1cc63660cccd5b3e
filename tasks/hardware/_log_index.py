"""A key -> value index of an append-only JSON-lines log, on disk (SQLite beside the log).

The log stays the record (``commands.jsonl``, ``queue.jsonl``: append-only, readable); the
index answers "what does the log say about this key" without the log's whole history in
memory, and remembers how far into the log it got (``indexed_to``, a byte offset) and a small
state of the reader's own at that point. An index behind its log (an edge killed between the
two writes) catches up from ``indexed_to``; an index ahead of its log (the log replaced) is
rebuilt. Written in WAL mode without fsync on commit: like the log's flushed lines, a commit
survives the process being killed (not a power cut: the log's fsync story is the same).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from scopeflow import JournalError

__all__ = ["LogIndex", "read_lines"]

_READ_BLOCK = 4 * 1024 * 1024


class LogIndex:
    """``get(key)``, ``put(entries, indexed_to=, state=)``; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 0), "
                "indexed_to INTEGER NOT NULL, state TEXT)"
            )
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot open the index {path}: {exc}; it is rebuilt from its log when "
                "missing: move the damaged file away and start again"
            ) from exc

    def position(self) -> tuple[int, str | None]:
        """``(indexed_to, state)``: the log's bytes before ``indexed_to`` are in the index."""
        with self._lock:
            row = self._db.execute("SELECT indexed_to, state FROM position").fetchone()
        return (0, None) if row is None else (int(row[0]), row[1])

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def put(
        self, entries: Iterable[tuple[str, str]], *, indexed_to: int, state: str | None = None
    ) -> None:
        """Store ``entries`` (a key seen again is replaced) and the position, in one commit."""
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO entries (key, value) VALUES (?, ?)", entries
                    )
                    self._db.execute(
                        "INSERT OR REPLACE INTO position (id, indexed_to, state) VALUES (0, ?, ?)",
                        (indexed_to, state),
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot write the index {self.path}: {exc}; check the disk (full, read-only?)"
            ) from exc

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM entries")
            self._db.execute("DELETE FROM position")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """``(end, line)`` for every whole line of ``path`` from byte ``start`` on, ``end`` being
    the byte after its newline; a last line without its newline is not yielded. Reads in
    blocks, so a long log costs no more memory than a block."""
    if not path.exists():
        return
    with path.open("rb") as f:
        f.seek(start)
        rest = b""
        offset = start
        while block := f.read(_READ_BLOCK):
            data = rest + block
            begin = 0
            while (newline := data.find(b"\n", begin)) >= 0:
                yield offset + newline + 1, data[begin:newline]
                begin = newline + 1
            offset += begin
            rest = data[begin:]
