"""Fan-out of journaled frames to any number of stream consumers.

Recent frames stay in memory (bounded by bytes); older ones are read back from the journal, so a
consumer that reconnects with ``from=N`` gets every frame from N on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from scopeflow import Frame

__all__ = ["FrameHub"]


class FrameHub:
    """Holds published frames; `get` blocks until a frame exists."""

    def __init__(self, read_back: Callable[[int], Frame], max_bytes: int) -> None:
        self._read_back = read_back
        self._max_bytes = max_bytes
        self._recent: OrderedDict[int, Frame] = OrderedDict()
        self._bytes = 0
        self._count = 0
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

    def get(self, index: int, timeout: float | None = None) -> Frame | None:
        """Frame ``index``, waiting up to ``timeout`` s for it; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: index < self._count or self._closed, timeout):
                return None
            if index >= self._count:
                return None
            frame = self._recent.get(index)
        return frame if frame is not None else self._read_back(index)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
