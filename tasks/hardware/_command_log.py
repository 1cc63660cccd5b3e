"""Idempotency: a command id has its effect once, however often it is sent.

Accepted commands are appended to ``commands.jsonl`` under the data dir, so a retry that arrives
after an edge restart is still recognised. The ids are looked up in an on-disk index of that log
(`LogIndex`, ``commands.jsonl.sqlite``), not in memory: an edge that accepts a command a frame
for days keeps no per-command state.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from scopeflow import CommandAck, CommandConflict, JournalError

from ._log_index import LogIndex, read_lines

__all__ = ["CommandLog"]

_BATCH = 2000  # lines indexed per commit when catching up


class CommandLog:
    """Remembers every accepted command id with its payload digest and answer."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._index = LogIndex(path.with_name(path.name + ".sqlite"))
            end = self._catch_up()
            self._file = path.open("ab")
            if self._file.tell() > end:  # a line cut short by a crash: end it, it stays unread
                self._file.write(b"\n")
                self._file.flush()
        except OSError as exc:
            raise JournalError(f"cannot open the command log {path}: {exc}") from exc

    def _catch_up(self) -> int:
        """Index the lines written since the index last saw the log; the end of the last one."""
        start, _ = self._index.position()
        size = self._path.stat().st_size if self._path.exists() else 0
        if size < start:  # not the log the index was made from
            self._index.clear()
            start = 0
        batch: list[tuple[str, str]] = []
        end = start
        for end, line in read_lines(self._path, start):
            try:
                record = json.loads(line)
                CommandAck.model_validate(record["ack"])
                batch.append((record["command_id"], json.dumps([record["digest"], record["ack"]])))
            except (ValueError, KeyError, TypeError):
                pass  # a line cut short by a crash: that command was never acknowledged
            if len(batch) >= _BATCH:
                self._index.put(batch, indexed_to=end)
                batch = []
        self._index.put(batch, indexed_to=end)
        return end

    def run_once(
        self, command_id: str, payload: str, execute: Callable[[], CommandAck]
    ) -> CommandAck:
        """Run ``execute`` unless ``command_id`` was accepted before; then return the first answer.

        Raises CommandConflict when the id was used before for a different payload. An
        ``execute`` that raises records nothing, so a corrected retry with the same id may run.
        """
        digest = hashlib.sha256(payload.encode()).hexdigest()
        with self._lock:
            seen = self._index.get(command_id)
            if seen is not None:
                old_digest, stored = json.loads(seen)
                if old_digest != digest:
                    raise CommandConflict(
                        f"command id {command_id!r} was already used for a different command; "
                        "use a new id for a new command"
                    )
                return CommandAck.model_validate(stored).model_copy(
                    update={"repeat": True, "detail": "repeat of an accepted command: no effect"}
                )
            ack = execute()
            dumped = ack.model_dump()
            record = {"command_id": command_id, "digest": digest, "ack": dumped}
            self._file.write((json.dumps(record) + "\n").encode())
            self._file.flush()
            self._index.put(
                [(command_id, json.dumps([digest, dumped]))], indexed_to=self._file.tell()
            )
            return ack

    def close(self) -> None:
        with self._lock:
            self._file.close()
            self._index.close()
