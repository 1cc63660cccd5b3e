"""Where each journaled frame's line is in ``frames.jsonl``, in bounded memory.

The last ``window`` frames' `Record` s are kept in memory (four fixed integer columns, filled
round-robin); an older frame is found in the log itself, which is its own index: lines are in
frame order and each begins with ``{"index":N,"series":S,"series_index":T,``. An
interpolation search between known line starts (frame 0 at byte 0, the oldest frame in the
window, the frame after the last one looked up) reads one or a few 8 KiB blocks, and a
sequential reader (a replay) finds the next line at once. Memory stays the same whatever the
length of the session (a list of every frame's record grew by 32 bytes a frame).
"""

from __future__ import annotations

import json
import os
import re
import threading
from array import array
from pathlib import Path

from scopeflow import JournalError

from ._log import Record, RecordTable

__all__ = ["DEFAULT_WINDOW", "FrameIndex", "check_window"]

DEFAULT_WINDOW = 4096  # frames whose records stay in memory (128 KiB)
_BLOCK = 8192
_SCAN_SPAN = 65536  # a span this short is read whole and scanned line by line
_PREFIX = re.compile(rb'\{"index":(\d+),"series":(\d+),"series_index":(\d+),')


def check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise JournalError(
            f"index_window must be a whole number of frames >= 1, got {window!r}; the default "
            f"({DEFAULT_WINDOW}) keeps 128 KiB of frame locations in memory"
        )


class FrameIndex:
    """``index[i]``: the `Record` of journaled frame ``i`` (``len(index)`` frames)."""

    def __init__(self, log_path: Path, window: int = DEFAULT_WINDOW) -> None:
        check_window(window)
        self._path = log_path
        self._window = window
        self._columns = tuple(array("q", bytes(8 * window)) for _ in range(4))
        self._count = 0
        self._lock = threading.Lock()
        self._cursor: Record | None = None  # the last frame found in the log, and its index
        self._cursor_index = -1

    def __len__(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        """What this index holds in memory (constant: its window's columns)."""
        return sum(c.itemsize * len(c) for c in self._columns)

    def append(self, record: Record) -> None:
        with self._lock:
            slot = self._count % self._window
            values = (record.series, record.series_index, record.offset, record.length)
            for column, value in zip(self._columns, values, strict=True):
                column[slot] = value
            self._count += 1

    def reset(self, records: RecordTable) -> None:
        """Replace everything with ``records`` (a full scan of the log); keeps the last window."""
        start = max(0, len(records) - self._window)
        with self._lock:
            self._count = start
            self._cursor, self._cursor_index = None, -1
        for record in records[start:]:
            self.append(record)

    def __getitem__(self, index: int) -> Record:
        with self._lock:
            if not 0 <= index < self._count:
                raise IndexError(f"frame {index} not in the index ({self._count} frames)")
            first = max(0, self._count - self._window)
            if index >= first:
                return self._slot(index)
            hi = (first, self._slot(first).offset)
            lo = (0, 0)
            cursor, at = self._cursor, self._cursor_index
        if cursor is not None:
            if at == index:
                return cursor
            nxt = (at + 1, cursor.offset + cursor.length)
            if nxt[0] <= index and nxt[0] > lo[0]:
                lo = nxt
            elif at > index and at < hi[0]:
                hi = (at, cursor.offset)
        record = self._search(index, lo, hi)
        with self._lock:
            self._cursor, self._cursor_index = record, index
        return record

    def _slot(self, index: int) -> Record:
        slot = index % self._window
        return Record(*(column[slot] for column in self._columns))

    # the search in the log ------------------------------------------------------------------

    def _search(self, index: int, lo: tuple[int, int], hi: tuple[int, int]) -> Record:
        """Frame ``index``'s line, knowing the lines of frames ``lo[0] <= index < hi[0]``
        start at bytes ``lo[1]`` and ``hi[1]``."""
        try:
            fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise self._fail(index, exc) from exc
        try:
            guess: int | None = None
            while True:
                (lo_i, lo_off), (hi_i, hi_off) = lo, hi
                if index == lo_i or hi_off - lo_off <= _SCAN_SPAN:
                    return self._scan(fd, index, lo, hi_off)
                if guess is None:  # interpolate: lines of one journal are of similar length
                    guess = lo_off + (index - lo_i) * (hi_off - lo_off) // (hi_i - lo_i)
                guess = min(max(guess, lo_off + 1), hi_off - 1)
                start, head = self._next_line_start(fd, guess)
                if start >= hi_off:  # no line starts in [guess, hi): look lower
                    guess = (lo_off + guess) // 2
                    continue
                at, record = self._line(fd, start, index, head)
                if at == index:
                    return record
                lo, hi = ((at + 1, start + record.length), hi) if at < index else (lo, (at, start))
                guess = None
        finally:
            os.close(fd)

    def _scan(self, fd: int, index: int, lo: tuple[int, int], hi_off: int) -> Record:
        """Frame ``index``'s line, counted from frame ``lo[0]`` (whose line starts at
        ``lo[1]``) in one read of the bytes up to ``hi_off``."""
        at, start = lo
        if at == index:
            return self._line(fd, start, index)[1]
        data = os.pread(fd, hi_off - start, start)
        pos = 0
        for _ in range(index - at):
            pos = data.find(b"\n", pos) + 1
            if pos == 0:
                raise self._fail(index, f"fewer lines than frames after byte {start}")
        found, record = self._line(fd, start + pos, index)
        if found != index:
            raise self._fail(index, f"frame {found} is at byte {start + pos}")
        return record

    def _next_line_start(self, fd: int, pos: int) -> tuple[int, bytes]:
        """The first byte at or after ``pos`` (> 0) that begins a line, and what was read
        of that line."""
        at = pos - 1
        while True:
            block = os.pread(fd, _BLOCK, at)
            newline = block.find(b"\n")
            if newline >= 0:
                return at + newline + 1, block[newline + 1 :]
            if not block:
                return at, b""
            at += len(block)

    def _line(self, fd: int, start: int, index: int, head: bytes = b"") -> tuple[int, Record]:
        """The frame number and record of the line that starts at byte ``start`` (``head``:
        its first bytes, already read)."""
        data = head or os.pread(fd, _BLOCK, start)
        end = data.find(b"\n")
        while end < 0:
            more = os.pread(fd, _BLOCK, start + len(data))
            if not more:
                raise self._fail(index, f"no whole line at byte {start}")
            data += more
            end = data.find(b"\n")
        line = data[:end]
        match = _PREFIX.match(line)
        if match is not None:
            at, series, series_index = (int(g) for g in match.groups())
        else:  # not in this writer's compact form: decode it all
            try:
                rec = json.loads(line)
                at, series, series_index = rec["index"], rec["series"], rec["series_index"]
            except (ValueError, KeyError, TypeError) as exc:
                raise self._fail(index, f"no frame record at byte {start}") from exc
        return at, Record(series, series_index, start, end + 1)

    def _fail(self, index: int | None, why: object) -> JournalError:
        return JournalError(
            f"cannot find frame {index} in {self._path}: {why}; the log was changed outside the "
            "journal: re-open the journal with FrameJournal.open(root) to re-read it"
        )
