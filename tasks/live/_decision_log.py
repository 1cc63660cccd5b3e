"""The decision log: one JSON line per decided frame, written as the loop runs.

Each line holds the frame (index, command id, stage), where it was analysed (remote or local)
and why, the policy's summary, the commands sent with their ids and answers, and the latency
split. The first line records the run, phase and first frame index, so a re-run under the same
run id starts its source there, replays the frames through the policy (its commands repeat ids
the edge has seen: nothing moves twice) and carries on. Lines are flushed as written; a crash
loses at most the line being written, which the reader ignores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["DecisionLog"]


class DecisionLog:
    """Append-only JSON lines at ``path``; ``DecisionLog.read(path)`` for audits and replays."""

    def __init__(self, path: Path, *, run_id: str, phase: str, first_frame: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = self.read(path) if path.exists() else []
        header = previous[0] if previous and previous[0].get("type") == "start" else None
        if header is not None and (header["run_id"], header["phase"]) != (run_id, phase):
            raise ValueError(
                f"{path} belongs to run {header['run_id']!r} phase {header['phase']!r}, not "
                f"{run_id!r}/{phase!r}: give this run its own output folder"
            )
        self.first_frame = int(header["first_frame"]) if header else first_frame
        self.resumed = header is not None
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        if header is None:
            self.write(
                {"type": "start", "run_id": run_id, "phase": phase, "first_frame": first_frame}
            )
        else:
            self.write({"type": "resume", "first_frame": self.first_frame})

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=_jsonable) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """Every complete record (a torn last line from a crash is skipped)."""
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
