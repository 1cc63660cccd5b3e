"""The ingest ledger: which files of a watched folder were handed on and which are done.

An append-only JSON-lines file, flushed and fsynced per line. A file is ``claimed`` (with its
index) when the source hands it on and ``done`` (with its result, e.g. the QC verdict) when
the consumer has finished with it. After a crash or a restart, done files are not handed on
again and claimed ones are handed on again first, under the same index, so nothing is
skipped, and nothing done is repeated. A line cut by the crash itself is ignored.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IngestLedger", "LedgerEntry"]


@dataclass
class LedgerEntry:
    key: str
    index: int
    size: int
    mtime_ns: int
    done: bool = False
    result: dict[str, Any] | None = None


class IngestLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.entries: dict[str, LedgerEntry] = {}
        self.damaged_lines = 0
        if path.exists():
            self._load()
        self._fh = path.open("a", encoding="utf-8")

    def _load(self) -> None:
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                key = record["key"]
            except (ValueError, KeyError, TypeError):
                self.damaged_lines += 1  # the last line of a crash: its file is redone
                continue
            if record.get("state") == "claimed":
                self.entries[key] = LedgerEntry(
                    key, int(record["index"]), int(record["size"]), int(record["mtime_ns"])
                )
            elif record.get("state") == "done" and key in self.entries:
                entry = self.entries[key]
                entry.done, entry.result = True, record.get("result")

    @property
    def next_index(self) -> int:
        return max((e.index for e in self.entries.values()), default=-1) + 1

    def pending(self) -> list[LedgerEntry]:
        """Claimed but not done, in index order (to hand on again after a restart)."""
        return sorted((e for e in self.entries.values() if not e.done), key=lambda e: e.index)

    def claim(self, key: str, size: int, mtime_ns: int) -> LedgerEntry:
        with self._lock:
            existing = self.entries.get(key)
            if existing is not None:
                return existing
            entry = LedgerEntry(key, self.next_index, size, mtime_ns)
            self.entries[key] = entry
            self._write({"state": "claimed", "key": key, "index": entry.index, "size": size,
                         "mtime_ns": mtime_ns})  # fmt: skip
            return entry

    def done(self, key: str, result: dict[str, Any] | None = None) -> bool:
        """Mark ``key`` done; False (and nothing written) when it already was."""
        with self._lock:
            entry = self.entries.get(key)
            if entry is None:
                raise KeyError(f"{key!r} was never claimed in {self.path}")
            if entry.done:
                return False
            entry.done, entry.result = True, result
            self._write({"state": "done", "key": key, "index": entry.index, "result": result})
            return True

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            self._fh.close()
