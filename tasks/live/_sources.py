"""Frame sources of the closed loop: frames in order, as references a worker can read.

- ``EdgeStreamSource``: an edge agent's stream. On the edge's host the payload is a
  shared-memory reference (a worker on that host reads the pixels itself, and this process
  copies them out of the ring only if it needs them: the local fallback); elsewhere it is the
  pixels, received over TCP. Frames of other clients are skipped: a source keeps only frames
  whose header names one of its command ids (by prefix). It also passes on the edge's notices
  about those commands (`EventFailed`, `CommandDone`), in their place between the frames, so
  the loop knows when an acquisition is over even if some of its frames never come.
- ``JournalReplaySource``: the frames of a stored edge journal, for tests and offline
  re-analysis of a run with another model or policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scopeflow import CommandDone, EventFailed, Frame, FrameHeader
from tasks.hardware import EdgeClient, Transport
from tasks.storage import FrameJournal

__all__ = ["EdgeStreamSource", "FrameSource", "JournalReplaySource", "LiveFrame"]


@dataclass(frozen=True)
class LiveFrame:
    """One frame as the loop sees it: its header, what to send a worker, and when it came."""

    header: FrameHeader
    payload: Any  # ShmFrameRef on the edge's host, else the pixels
    received_ns: int
    pixels: Callable[[], np.ndarray]  # the pixels here, for a local model or storage

    @property
    def index(self) -> int:
        return self.header.index


class FrameSource(Protocol):
    """Frames in index order, and optionally the edge's notices between them; ``stop()`` (any
    thread) ends the iteration soon after."""

    def frames(self) -> Iterator[LiveFrame | EventFailed | CommandDone]: ...

    def stop(self) -> None: ...


class EdgeStreamSource:
    """Frames from an edge agent from index ``start`` on, only those of ``command_prefix``."""

    def __init__(
        self,
        client: EdgeClient,
        *,
        start: int,
        command_prefix: str | None = None,
        transport: Transport = "auto",
    ) -> None:
        self._client = client
        self._start = start
        self._prefix = command_prefix
        self._transport = transport
        self._stopped = False

    def frames(self) -> Iterator[LiveFrame | EventFailed | CommandDone]:
        client = self._client
        stream = client.frames(
            self._start, transport=self._transport, notices=True, shm_pixels="defer"
        )
        for frame in stream:
            if self._stopped:
                return
            received = time.time_ns()
            if not isinstance(frame, Frame):
                if self._mine(frame.command_id):
                    yield frame
                continue
            if not self._mine(frame.header.command_id):
                continue
            ref = client.shm_ref(frame)
            if ref is not None:
                yield LiveFrame(frame.header, ref, received, _deferred(client, frame.header))
                continue
            if frame.header.shm_slot is not None:  # slot reused already: read it elsewhere
                frame = Frame(frame.header, client.pixels_of(frame.header))
            yield LiveFrame(frame.header, frame.pixels, received, _const(frame))

    def stop(self) -> None:
        self._stopped = True

    def _mine(self, command_id: str | None) -> bool:
        return self._prefix is None or (command_id or "").startswith(self._prefix)


class JournalReplaySource:
    """The frames of an edge journal (``<data-dir>/sessions/<session>/journal``), in order."""

    def __init__(self, root: Path, *, start: int = 0, stop: int | None = None) -> None:
        self._journal = FrameJournal.open(root)
        self._start = start
        self._stop_at = stop
        self._stopped = False

    def frames(self) -> Iterator[LiveFrame]:
        end = len(self._journal) if self._stop_at is None else self._stop_at
        for index in range(self._start, end):
            if self._stopped:
                return
            header = FrameHeader.from_journal(index, self._journal.read_meta(index)["meta"])
            pixels = self._journal.read(index)
            frame = Frame(header, pixels)
            yield LiveFrame(header, pixels, time.time_ns(), _const(frame))

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self._journal.close()


def _const(frame: Frame) -> Callable[[], np.ndarray]:
    return lambda: frame.pixels


def _deferred(client: EdgeClient, header: FrameHeader) -> Callable[[], np.ndarray]:
    """The pixels of a frame left in the edge's ring, read (once) when first asked for."""
    pixels: list[np.ndarray] = []

    def read() -> np.ndarray:
        if not pixels:
            pixels.append(client.pixels_of(header))
        return pixels[0]

    return read
