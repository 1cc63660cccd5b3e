"""The append-only per-frame metadata log ``frames.jsonl``: one JSON object per line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Record", "complete_lines", "parse_record"]


@dataclass(frozen=True, slots=True)
class Record:
    """Where frame ``index`` lives: its series, its ``t`` in that series, its log line."""

    series: int
    series_index: int
    offset: int
    length: int


def complete_lines(data: bytes, base: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(file offset, line without newline)`` for every newline-terminated line.

    A trailing fragment without its newline (a write cut short) is not yielded.
    """
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        yield base + start, data[start:end]
        start = end + 1


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The decoded line, or None when it is not a well-formed journal record."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict):
        return None
    for key in ("index", "series", "series_index"):
        if not isinstance(rec.get(key), int) or isinstance(rec.get(key), bool):
            return None
    if not isinstance(rec.get("meta"), dict):
        return None
    return rec
