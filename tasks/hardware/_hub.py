"""Fan-out of journaled frames, and the notices between them, to any number of consumers.

Recent frames stay in memory (bounded by bytes); older ones are read back from the journal, so a
consumer that reconnects with ``from=N`` gets every frame from N on. Notices, each at its stream
position (the number of frames before it), go to the session's ``notices.jsonl``; the recent
ones stay in memory too (`NoticeSpool`), so memory does not grow with a session's commands.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from scopeflow import CommandDone, EventFailed, Frame

from ._notice_spool import NoticeSpool

__all__ = ["FrameHub"]


class FrameHub:
    """Holds published frames; `get` blocks until a frame exists."""

    def __init__(
        self,
        read_back: Callable[[int], Frame],
        max_bytes: int,
        notices_path: Path | None = None,
        notice_window: int = 1024,
    ) -> None:
        """``notices_path``: where notices are written (and read back once out of the recent
        window); None keeps them all in memory."""
        self._read_back = read_back
        self._max_bytes = max_bytes
        self._recent: OrderedDict[int, Frame] = OrderedDict()
        self._bytes = 0
        self._count = 0
        self._notices = NoticeSpool(notices_path, notice_window)
        self._closed = False
        self._cond = threading.Condition()

    @property
    def count(self) -> int:
        """Number of frames published so far (the next index)."""
        return self._count

    def publish(self, frame: Frame) -> None:
        with self._cond:
            if frame.index != self._count:
                raise RuntimeError(f"frame {frame.index} published out of order ({self._count})")
            self._recent[frame.index] = frame
            self._bytes += frame.pixels.nbytes
            while self._bytes > self._max_bytes and len(self._recent) > 1:
                _, old = self._recent.popitem(last=False)
                self._bytes -= old.pixels.nbytes
            self._count += 1
            self._cond.notify_all()

    def publish_notice(self, notice: EventFailed | CommandDone) -> None:
        """Add a notice at the current position (after every frame published so far)."""
        with self._cond:
            if notice.position != self._count:
                raise RuntimeError(f"notice at {notice.position} published at {self._count}")
            self._notices.append(notice)
            self._cond.notify_all()

    def notice_cursor(self, start: int) -> int:
        """Where a stream from frame ``start`` begins in the notices: the first one whose
        position is ``start`` or later."""
        with self._cond:
            return self._notices.cursor(start)

    def next_message(
        self, index: int, cursor: int | None, timeout: float | None = None
    ) -> Frame | EventFailed | CommandDone | None:
        """What a stream at frame ``index`` (and notice ``cursor``; None: frames only) sends
        next: the notice when it comes before frame ``index``, else the frame; waits up to
        ``timeout`` s, None on timeout or close. The caller advances ``index`` after a frame
        and ``cursor`` after a notice."""

        def ready() -> bool:
            notice_ready = cursor is not None and cursor < len(self._notices)
            return index < self._count or notice_ready or self._closed

        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                return None
            if cursor is not None and cursor < len(self._notices):
                notice = self._notices[cursor]
                if notice.position <= index:
                    return notice
            if index >= self._count:
                return None
            frame = self._recent.get(index)
        return frame if frame is not None else self._read_back(index)

    def get(self, index: int, timeout: float | None = None) -> Frame | None:
        """Frame ``index``, waiting up to ``timeout`` s for it; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: index < self._count or self._closed, timeout):
                return None
            if index >= self._count:
                return None
            frame = self._recent.get(index)
        return frame if frame is not None else self._read_back(index)

    @property
    def notices_in_memory(self) -> int:
        with self._cond:
            return self._notices.in_memory

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._notices.close()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
