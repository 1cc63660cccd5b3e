"""The notices of an edge session in order, in bounded memory.

Each notice is a line of ``notices.jsonl`` (in the session folder) and its byte offset 8 bytes
of ``notices.jsonl.offsets``; the last ``window`` notices are also kept in memory, so streams
that keep up never read the disk, and a stream resuming from an old position reads its notices
back (one read for the offset, one for the line). A notice the disk refused is kept in memory
(and logged), so a stream still carries it.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from collections import deque
from pathlib import Path

from scopeflow import CommandDone, EventFailed, parse_notice

__all__ = ["NoticeSpool"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 1024
_OFFSET = struct.Struct("<q")

Notice = EventFailed | CommandDone


class NoticeSpool:
    """``spool[k]``: notice ``k``; ``len(spool)``; ``cursor(start)``. Not thread-safe: the
    `FrameHub` calls it under its lock."""

    def __init__(self, path: Path | None, window: int = DEFAULT_WINDOW) -> None:
        self._path = path
        self._recent: deque[Notice] = deque(maxlen=window if path is not None else None)
        self._count = 0
        self._refused: dict[int, Notice] = {}  # not written (disk error): kept here
        self._log: int | None = None
        self._offsets: int | None = None
        self._end = 0
        if path is not None:
            flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)
            self._log = os.open(path, flags | os.O_APPEND, 0o644)
            self._offsets = os.open(self._offsets_path, flags | os.O_TRUNC, 0o644)
            self._end = os.fstat(self._log).st_size

    @property
    def _offsets_path(self) -> Path:
        assert self._path is not None
        return self._path.with_name(self._path.name + ".offsets")

    def __len__(self) -> int:
        return self._count

    @property
    def in_memory(self) -> int:
        """Notices held in memory (at most the window, plus any the disk refused)."""
        return len(self._recent) + len(self._refused)

    def append(self, notice: Notice) -> None:
        if self._log is not None and self._offsets is not None:
            line = (notice.model_dump_json() + "\n").encode()
            try:
                # notice k's offset is at byte 8k: a notice the disk refused leaves a hole
                os.pwrite(self._offsets, _OFFSET.pack(self._end), self._count * _OFFSET.size)
                view = memoryview(line)
                while view:
                    view = view[os.write(self._log, view) :]
                self._end += len(line)
            except OSError as exc:  # the stream still carries it
                log.error("cannot log notice %s: %s", notice, exc)
                self._refused[self._count] = notice
                self._end = os.fstat(self._log).st_size
        self._recent.append(notice)
        self._count += 1

    def __getitem__(self, number: int) -> Notice:
        first = self._count - len(self._recent)
        if number >= first:
            return self._recent[number - first]
        if number in self._refused:
            return self._refused[number]
        assert self._path is not None
        with self._path.open("rb") as log_file, self._offsets_path.open("rb") as offsets:
            offsets.seek(number * _OFFSET.size)
            (offset,) = _OFFSET.unpack(offsets.read(_OFFSET.size))
            log_file.seek(offset)
            line = log_file.readline()
        return parse_notice(line)

    def cursor(self, start: int) -> int:
        """The first notice whose position is ``start`` or later (positions never decrease)."""
        return bisect.bisect_left(range(self._count), start, key=lambda k: self[k].position)

    def close(self) -> None:
        for fd in (self._log, self._offsets):
            if fd is not None:
                os.close(fd)
        self._log = self._offsets = None
