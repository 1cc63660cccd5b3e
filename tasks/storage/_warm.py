"""Pre-written chunk files, so that appending a frame overwrites pages already in the page cache.

Writing 8 MiB into a new file costs the kernel a page-cache allocation per page: ~13 ms p50 on a
2-core VM when frames are paced, against ~2 ms to overwrite a file whose pages are cached. A
background thread keeps the next few chunk files of the active series written with zeros in a
side folder; an append writes its pixels over one and renames it into the store. The zeros never
reach the disk: they are overwritten long before the kernel writes dirty pages back.

That only pays while the appender leaves idle time between frames. When frames come back to back
(a burst, a fast camera, a bulk import), a warm file is never ready in time: the appender writes a
new file anyway and the warmer's 8 MiB of zeros are thrown away -- twice the memory traffic and a
core taken from the appender (0.42 of a raw write on 2 cores, against ~1.0 without the warmer).
So the warmer only works while the time between appends exceeds 1.5x what one warm file costs it
(both smoothed), and idles otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

from ._fsutil import write_all

__all__ = ["ChunkWarmer"]

_YIELD_S = 0.008
_SMOOTH = 0.25  # weight of the newest sample in the running estimates
_MARGIN = 1.5  # warm only while appends are this much slower than the warmer


class ChunkWarmer:
    """Keeps files for the next ``depth`` chunks of one series ready in ``folder``."""

    def __init__(self, folder: Path, depth: int = 3) -> None:
        self._folder = folder
        self._depth = depth
        self._cond = threading.Condition()
        self._wanted: list[tuple[int, int]] = []
        self._nbytes = 0
        self._ready: dict[tuple[int, int], str] = {}
        self._closed = False
        self._zeros = b""
        self._made = 0
        self._last_want = 0.0
        self._gap_s = 0.0  # smoothed time between appends (0: unknown yet, warm)
        self._cost_s = 0.0  # smoothed time the warmer needs per file, yield included
        folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="chunk-warmer", daemon=True)
        self._thread.start()

    def want(self, series: int, next_t: int, nbytes: int) -> None:
        """Prepare chunks ``next_t .. next_t + depth - 1`` of ``series``, each ``nbytes`` long."""
        with self._cond:
            now = time.monotonic()
            if self._last_want:
                self._gap_s = _smooth(self._gap_s, now - self._last_want)
            self._last_want = now
            wanted = [(series, t) for t in range(next_t, next_t + self._depth)]
            if nbytes != self._nbytes:
                self._drop_ready_locked()
                self._nbytes = nbytes
            stale = [key for key in self._ready if key not in wanted]
            for key in stale:
                with contextlib.suppress(OSError):
                    os.unlink(self._ready.pop(key))
            self._wanted = wanted
            self._cond.notify()

    def take(self, series: int, t: int, nbytes: int) -> str | None:
        """The ready file for chunk ``t`` of ``series`` (now the caller's), or None."""
        with self._cond:
            if (series, t) in self._wanted:
                self._wanted.remove((series, t))  # never prepared again under the caller
            if nbytes != self._nbytes:
                return None
            return self._ready.pop((series, t), None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)
        shutil.rmtree(self._folder, ignore_errors=True)

    def _drop_ready_locked(self) -> None:
        for path in self._ready.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._ready.clear()

    @property
    def keeping_up(self) -> bool:
        """Whether appends leave time for the warmer (it idles while they do not)."""
        return self._gap_s == 0.0 or self._gap_s > _MARGIN * self._cost_s

    def _next_job(self) -> tuple[tuple[int, int], int] | None:
        with self._cond:
            while not self._closed:
                if self.keeping_up:
                    for key in self._wanted:
                        if key not in self._ready:
                            return key, self._nbytes
                self._cond.wait()
                # let the frame just appended reach its consumers before competing with them
                # for memory bandwidth
                self._cond.wait(_YIELD_S)
            return None

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            (series, t), nbytes = job
            started = time.monotonic()
            if len(self._zeros) != nbytes:
                self._zeros = bytes(nbytes)
            self._made += 1
            path = os.path.join(self._folder, f"{series}-{t}-{self._made}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    write_all(fd, self._zeros)
                finally:
                    os.close(fd)
            except OSError:  # a full disk: appends fall back to writing new files
                with contextlib.suppress(OSError):
                    os.unlink(path)
                with self._cond:
                    self._wanted = []
                continue
            with self._cond:
                self._cost_s = _smooth(self._cost_s, _YIELD_S + time.monotonic() - started)
                if (series, t) in self._wanted and nbytes == self._nbytes and not self._closed:
                    self._ready[(series, t)] = path
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)


def _smooth(old: float, new: float) -> float:
    return new if old == 0.0 else old + _SMOOTH * (new - old)
