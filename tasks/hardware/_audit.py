"""The audit log: who sent which control request, as JSON lines in the edge's data dir.

One line per control request that got past authentication (granted or refused by role or
lease): time, user, role, lease holder, path (``http`` or ``channel``), method and path, the
command id and type when the request names them, and the status answered.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["AuditLog", "command_fields"]

_COMMAND_ID = re.compile(rb'"command_id"\s*:\s*"([^"\\]{1,200})"')
_COMMAND_TYPE = re.compile(rb'"command"\s*:\s*\{[^{}]*?"type"\s*:\s*"([a-z_]{1,40})"')
_DEVICE_ACTION = re.compile(rb'"type"\s*:\s*"custom"\s*,\s*"name"\s*:\s*"([a-z_]{1,40})"')


def command_fields(body: bytes) -> dict[str, str]:
    """The command id, direct-command type and device actions (``pump``, ``stimulate``) a
    request body names (from its first bytes; absent when it names none)."""
    fields = {}
    if match := _COMMAND_ID.search(body):
        fields["command_id"] = match.group(1).decode(errors="replace")
    if match := _COMMAND_TYPE.search(body):
        fields["command"] = match.group(1).decode()
    if actions := sorted({m.decode() for m in _DEVICE_ACTION.findall(body)}):
        fields["device_actions"] = ",".join(actions)  # a pump run, a stimulation on an event
    return fields


class AuditLog:
    """Appends audit records to ``path`` (thread-safe; each line flushed)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle = self.path.open("a", encoding="utf-8")

    def record(self, **fields: Any) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
        line = json.dumps(entry, default=str) + "\n"
        with self._lock:
            if self._handle.closed:
                return
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """Every record of an audit log (for tests and reports)."""
        if not Path(path).exists():
            return []
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
