"""The spool's folder: durable, ordered registrations waiting for OMERO, and what OMERO answered.

Layout (every file written to a temporary name, fsynced, renamed, folder fsynced)::

    pending/<seq>-<pid>-<rand>.json   a RegistrationRequest; name order = submission order
    done/<key>.json                   the RegistrationResult of a delivered key (the results log)
    failed/<name>.json, <name>.error  a request OMERO cannot take as it is, and why
    .drain.lock                       held by the one process that drains the spool

A request leaves ``pending/`` only after its result is in ``done/``; a crash in between leaves
both, and the next drain sees the key in ``done/`` and drops the duplicate.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from scopeflow import OmeroError

from .._fsutil import WriterLock, fsync_dir
from ._models import RegistrationRequest, RegistrationResult

__all__ = ["SpoolStore"]

_PARTIAL = ".partial"


class SpoolStore:
    """Files of one spool folder. Thread-safe for submitters; one drainer (the lock holder)."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self._fsync = fsync
        self.pending = self.root / "pending"
        self.done = self.root / "done"
        self.failed = self.root / "failed"
        for folder in (self.pending, self.done, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.root / ".drain.lock")
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self._counter = itertools.count()

    # -- submitting (any process, any thread) --

    def add(self, request: RegistrationRequest) -> str:
        """Write ``request`` durably to ``pending/``; its file name (order key) is returned."""
        with self._seq_lock:  # names strictly increase within this process
            self._last_seq = max(time.time_ns(), self._last_seq + 1)
            seq = self._last_seq
        name = f"{seq:020d}-{os.getpid()}-{next(self._counter)}-{uuid.uuid4().hex[:6]}"
        # plain strings: pathlib interns every name it parses, and the interpreter's table of
        # interned strings would grow with each request of a long outage
        data = request.model_dump_json().encode()
        _durable_write(os.path.join(self.pending, f"{name}.json"), data, fsync=self._fsync)
        return name

    # -- draining (the lock holder) --

    def acquire(self) -> None:
        """Become the drainer; raises :class:`OmeroError` when another process drains it."""
        if not self._lock.acquire():
            raise OmeroError(
                f"the OMERO spool {self.root} is being drained by another process (it holds "
                f"{self._lock.path}); let that one deliver, or give this one its own spill_dir"
            )
        for folder in (self.pending, self.done, self.failed):  # left by a crash mid-write
            for partial in folder.glob(f".*{_PARTIAL}"):
                partial.unlink(missing_ok=True)

    def release(self) -> None:
        self._lock.release()

    def pending_names(self, limit: int | None = None) -> list[str]:
        """Names of the (``limit`` oldest) waiting requests, oldest first.

        Memory is O(limit), not O(pending): a spool may hold a long outage's worth of requests.
        """
        names = (name[:-5] for name in self._scan(self.pending))
        return sorted(names) if limit is None else heapq.nsmallest(limit, names)

    def pending_count(self) -> int:
        return sum(1 for _ in self._scan(self.pending))

    @staticmethod
    def _scan(folder: Path) -> Iterator[str]:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".json") and entry.name[:1].isdigit():
                    yield entry.name

    def load(self, name: str) -> tuple[RegistrationRequest, int]:
        """The request named ``name`` and its size in bytes."""
        data = (self.pending / f"{name}.json").read_bytes()
        return RegistrationRequest.model_validate_json(data), len(data)

    def result(self, key: str) -> RegistrationResult | None:
        try:
            return RegistrationResult.model_validate_json((self.done / f"{key}.json").read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:  # torn by a power cut: deliver again, the uploader answers by key
            return None

    def record(self, name: str, result: RegistrationResult) -> None:
        """Log ``result`` durably, then drop the pending request (in that order)."""
        # the folder is not fsynced: should a power cut lose this entry, the request is handed
        # over again and the uploader answers from its key (no second image)
        _durable_write(
            self.done / f"{result.key}.json",
            result.model_dump_json().encode(),
            fsync=self._fsync,
            sync_dir=False,
        )
        self.drop(name)

    def drop(self, name: str) -> None:
        """Forget a delivered request. Not fsynced: should a crash undo the unlink, the key is
        in ``done/`` and the next drain drops the request again without sending it."""
        (self.pending / f"{name}.json").unlink(missing_ok=True)

    def fail(self, name: str, reason: str) -> None:
        """Move a request OMERO refused to ``failed/``, with the reason beside it."""
        _durable_write(self.failed / f"{name}.error", reason.encode(), fsync=self._fsync)
        os.replace(self.pending / f"{name}.json", self.failed / f"{name}.json")
        fsync_dir(self.failed)
        fsync_dir(self.pending)

    def failures(self) -> list[tuple[str, str]]:
        """``(name, reason)`` of every failed request, oldest first."""
        out = []
        for path in sorted(self.failed.glob("[0-9]*.json")):
            error = path.with_suffix(".error")
            out.append((path.stem, error.read_text() if error.exists() else "unknown"))
        return out

    def requeue_failed(self) -> int:
        """Put every failed request back in ``pending/`` (after fixing its cause)."""
        count = 0
        for name, _ in self.failures():
            os.replace(self.failed / f"{name}.json", self.pending / f"{name}.json")
            (self.failed / f"{name}.error").unlink(missing_ok=True)
            count += 1
        fsync_dir(self.pending)
        fsync_dir(self.failed)
        return count


def _durable_write(path: Path | str, data: bytes, *, fsync: bool, sync_dir: bool = True) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}{_PARTIAL}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync and sync_dir:
        fsync_dir(Path(folder))
