"""OmeroSpool: register in OMERO without ever making the acquisition wait for OMERO.

``submit`` writes the request durably to local disk (a few ms, an fsync) and returns; it never
waits for OMERO. A drainer (a thread after :meth:`OmeroSpool.start`, or :meth:`OmeroSpool.drain`
in the caller's thread) reads the oldest requests back into a bounded in-memory queue
(``max_items`` / ``max_bytes``: everything beyond stays spilled on disk), hands them to the
uploader in order, and deletes each one only after the uploader returned its result, which is
logged first. While OMERO is unreachable the drainer retries the same request with a doubling
wait; a request OMERO refuses as such (:class:`OmeroRejected`) moves to ``failed/`` and the
queue goes on. After a crash or restart the next drainer resumes with what is on disk.

Delivery is at-least-once; with an uploader that honours ``request.key`` (``OmeroRegistrar``
does) the effect is exactly once: a request delivered but not yet logged when the process died
is handed over again and the uploader returns the earlier registration.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from scopeflow import Closeable, OmeroRejected, OmeroSettings

from ._models import RegistrationRequest, RegistrationResult
from ._spool_store import SpoolStore

__all__ = ["OmeroSpool", "SpoolStats", "Uploader"]

log = logging.getLogger(__name__)

_IDLE_POLL_S = 0.5  # an idle drainer looks for requests of other processes this often


@runtime_checkable
class Uploader(Protocol):
    """Where a spool delivers. ``OmeroRegistrar`` is the real one.

    ``register`` returns the result once the destination holds the registration, and returns the
    earlier result for a ``request.key`` it already holds. It raises :class:`OmeroRejected` when
    this request can never succeed as it is (the spool moves it to ``failed/``); any other
    exception means "not now" (unreachable, timed out, login refused): the spool keeps the
    request and retries it later.
    """

    def register(self, request: RegistrationRequest) -> RegistrationResult: ...


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot of a spool, for logs, tests and ``scopeflow omero drain``."""

    pending: int  # requests on disk waiting for delivery
    in_memory: int  # of those, read into the drainer's queue
    memory_bytes: int  # their size
    peak_memory_bytes: int  # the largest memory_bytes so far
    delivered: int  # results logged by this process
    duplicates: int  # requests dropped because their key was already delivered
    failed: int  # requests in failed/
    last_error: str | None  # why the last delivery attempt did not succeed


@dataclass(frozen=True)
class _Item:
    name: str
    request: RegistrationRequest
    size: int


class OmeroSpool(Closeable):
    """A durable, bounded, ordered queue of registrations in front of an :class:`Uploader`."""

    def __init__(
        self,
        directory: Path,
        uploader: Uploader,
        *,
        max_items: int = 64,
        max_bytes: int = 1 << 20,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        fsync: bool = True,
    ) -> None:
        """``fsync=False`` keeps what a killed process wrote (the page cache survives it) but not
        what a power cut catches in flight: for a spool on tmpfs, or tests of other guarantees.
        """
        if not isinstance(uploader, Uploader):
            raise TypeError(f"{uploader!r} has no register(request) method: it is no Uploader")
        self._store = SpoolStore(directory, fsync=fsync)
        self._uploader = uploader
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._retry = (retry_initial_s, retry_max_s)
        self._queue: collections.deque[_Item] = collections.deque()
        self._memory_bytes = 0
        self._peak_bytes = 0
        self._delivered = 0
        self._duplicates = 0
        self._last_error: str | None = None
        self._state = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._draining = False

    @classmethod
    def from_settings(cls, settings: OmeroSettings, uploader: Uploader) -> OmeroSpool:
        return cls(
            settings.spill_dir,
            uploader,
            max_items=settings.queue_max_items,
            max_bytes=settings.queue_max_bytes,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
        )

    @property
    def directory(self) -> Path:
        return self._store.root

    # -- producers --

    def submit(self, request: RegistrationRequest) -> str:
        """Queue ``request`` durably and return its key at once (no OMERO traffic here)."""
        self._store.add(request)
        self._wake.set()
        return request.key

    def result(self, key: str) -> RegistrationResult | None:
        """What OMERO answered for ``key``, once delivered (from the results log)."""
        return self._store.result(key)

    def failures(self) -> list[tuple[str, str]]:
        """``(name, reason)`` of the requests in ``failed/``."""
        return self._store.failures()

    def requeue_failed(self) -> int:
        """Move the failed requests back to the queue (after fixing why they failed)."""
        count = self._store.requeue_failed()
        self._wake.set()
        return count

    def stats(self) -> SpoolStats:
        with self._state:
            return SpoolStats(
                pending=self._store.pending_count(),
                in_memory=len(self._queue),
                memory_bytes=self._memory_bytes,
                peak_memory_bytes=self._peak_bytes,
                delivered=self._delivered,
                duplicates=self._duplicates,
                failed=len(self._store.failures()),
                last_error=self._last_error,
            )

    # -- draining --

    def start(self) -> Self:
        """Deliver in a background thread until :meth:`close`."""
        if self._thread is None:
            self._become_drainer()
            self._thread = threading.Thread(
                target=self._run, name=f"omero-spool:{self.directory.name}", daemon=True
            )
            self._thread.start()
        return self

    def drain(self, timeout: float | None = None) -> bool:
        """Deliver in this thread until nothing is pending (True) or ``timeout`` s passed."""
        if self._thread is not None:
            return self.wait_empty(timeout)
        self._become_drainer()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set():
            item = self._take()
            if item is None:
                return True
            if not self._deliver(item, deadline=deadline):
                self._put_back(item)
                return False
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self._store.pending_count() == 0

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until the drainer thread delivered everything pending (True) or timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._store.pending_count():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop delivering; whatever is not delivered stays on disk for the next drainer."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        if self._draining:
            self._draining = False
            self._store.release()
        with self._state:
            self._queue.clear()
            self._memory_bytes = 0

    def _become_drainer(self) -> None:
        if not self._draining:
            self._store.acquire()
            self._draining = True
            self._stop.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._take()
            if item is None:
                self._wake.wait(_IDLE_POLL_S)
                self._wake.clear()
                continue
            if not self._deliver(item, deadline=None):
                self._put_back(item)

    def _take(self) -> _Item | None:
        """The oldest pending request: from memory, else read the next batch from disk."""
        with self._state:
            if not self._queue:
                self._fill()
            if not self._queue:
                return None
            item = self._queue.popleft()
            self._memory_bytes -= item.size
            return item

    def _put_back(self, item: _Item) -> None:
        with self._state:
            self._queue.appendleft(item)
            self._memory_bytes += item.size

    def _fill(self) -> None:
        # the queue is empty and the previous item was delivered or failed: every request on
        # disk is undelivered, and none of them is in memory
        for name in self._store.pending_names(limit=self._max_items):
            request, size = self._store.load(name)
            full = (
                len(self._queue) >= self._max_items or self._memory_bytes + size > self._max_bytes
            )
            if full and self._queue:
                break
            self._queue.append(_Item(name, request, size))
            self._memory_bytes += size
            self._peak_bytes = max(self._peak_bytes, self._memory_bytes)
            if full:  # one request larger than the whole bound: hand it over alone
                break

    def _deliver(self, item: _Item, *, deadline: float | None) -> bool:
        """Deliver ``item``, retrying while the uploader says "not now". False: stopped/timeout."""
        wait = self._retry[0]
        while not self._stop.is_set():
            if self._store.result(item.request.key) is not None:
                self._store.drop(item.name)
                with self._state:
                    self._duplicates += 1
                return True
            try:
                result = self._uploader.register(item.request)
            except OmeroRejected as exc:
                log.error(
                    "OMERO refused registration %s (%s): %s", item.request.key, item.name, exc
                )
                self._store.fail(item.name, str(exc))
                with self._state:
                    self._last_error = str(exc)
                return True
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                with self._state:
                    repeated, self._last_error = message == self._last_error, message
                # once per distinct cause: an OMERO outage of hours must not flood the log
                (log.debug if repeated else log.warning)(
                    "registration %s waits, retry in %.3g s: %s", item.request.key, wait, message
                )
                if deadline is not None and time.monotonic() + wait > deadline:
                    return False
                if self._stop.wait(wait):
                    return False
                wait = min(wait * 2, self._retry[1])
                continue
            self._store.record(item.name, result)
            with self._state:
                self._delivered += 1
                recovered, self._last_error = self._last_error is not None, None
            if recovered:
                log.info("registration %s delivered, OMERO answers again", item.request.key)
            return True
        return False
