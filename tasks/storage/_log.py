"""The append-only per-frame metadata log ``frames.jsonl``: one JSON object per line."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, overload

__all__ = ["Record", "RecordTable", "complete_lines", "parse_record"]


@dataclass(frozen=True, slots=True)
class Record:
    """Where frame ``index`` lives: its series, its ``t`` in that series, its log line."""

    series: int
    series_index: int
    offset: int
    length: int


class RecordTable:
    """Frames' `Record` s as four columns of 64-bit integers: 32 bytes a frame (a list of
    Records costs ~110); a full scan of the log collects them here (`FrameIndex` keeps a
    bounded window of them)."""

    __slots__ = ("_columns",)

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._columns = tuple(array("q") for _ in range(4))
        for record in records:
            self.append(record)

    def append(self, record: Record) -> None:
        for column, value in zip(
            self._columns,
            (record.series, record.series_index, record.offset, record.length),
            strict=True,
        ):
            column.append(value)

    def __len__(self) -> int:
        return len(self._columns[0])

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> RecordTable: ...
    def __getitem__(self, index: int | slice) -> Record | RecordTable:
        if isinstance(index, slice):
            table = RecordTable()
            table._columns = tuple(column[index] for column in self._columns)
            return table
        return Record(*(column[index] for column in self._columns))

    def __iter__(self) -> Iterator[Record]:
        for values in zip(*self._columns, strict=True):
            yield Record(*values)


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
