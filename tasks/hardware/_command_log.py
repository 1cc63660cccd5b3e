"""Idempotency: a command id has its effect once, however often it is sent.

Accepted commands are appended to ``commands.jsonl`` under the data dir, so a retry that arrives
after an edge restart is still recognised.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from scopeflow import CommandAck, CommandConflict, JournalError

__all__ = ["CommandLog"]


class CommandLog:
    """Remembers every accepted command id with its payload digest and answer."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, CommandAck]] = {}
        if path.exists():
            self._load()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"cannot open the command log {path}: {exc}") from exc

    def _load(self) -> None:
        for line in self._path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                ack = CommandAck.model_validate(record["ack"])
            except (ValueError, KeyError):
                continue  # a line cut short by a crash: that command was never acknowledged
            self._seen[record["command_id"]] = (record["digest"], ack)

    def run_once(
        self, command_id: str, payload: str, execute: Callable[[], CommandAck]
    ) -> CommandAck:
        """Run ``execute`` unless ``command_id`` was accepted before; then return the first answer.

        Raises CommandConflict when the id was used before for a different payload. An
        ``execute`` that raises records nothing, so a corrected retry with the same id may run.
        """
        digest = hashlib.sha256(payload.encode()).hexdigest()
        with self._lock:
            if command_id in self._seen:
                old_digest, ack = self._seen[command_id]
                if old_digest != digest:
                    raise CommandConflict(
                        f"command id {command_id!r} was already used for a different command; "
                        "use a new id for a new command"
                    )
                return ack.model_copy(
                    update={"repeat": True, "detail": "repeat of an accepted command: no effect"}
                )
            ack = execute()
            self._seen[command_id] = (digest, ack)
            record = {"command_id": command_id, "digest": digest, "ack": ack.model_dump()}
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            return ack

    def close(self) -> None:
        with self._lock:
            self._file.close()
