"""The microscope lease on the edge: one holder controls the microscope at a time.

A lease is taken (or renewed) by ``POST /v1/lease`` and lasts ``ttl_s`` seconds unless renewed;
a holder that dies stops renewing and the lease runs out. While a lease runs, a control request
is let through only when it names the holder (`LEASE_HEADER`, or the command channel's hello)
and comes from the user who took it; anyone else gets `LeaseRefused` (HTTP 423) saying who
holds the microscope and until when. Without a lease, control requests pass unless the edge
requires one (``require_lease``).

The lease outlives the edge process: with a ``path`` (``<data-dir>/lease.json``) every grant,
renewal and release is written there (atomically: a temporary file, then a rename) before it
is answered, and an edge restarted on the same data dir takes the lease back, so a flow run
that held the microscope still holds it after a crash and nobody else slips in meanwhile.
Expiry is measured in wall-clock time (``expires_at``), the only clock that spans a restart:
a lease runs out ``ttl_s`` after its last renewal, whether the edge was up all that time or
not. A wall clock set back does not stretch it: a stored lease ends at most ``ttl_s`` after
the edge reads it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from scopeflow import LEASE_HEADER, JournalError, LeaseInfo, LeaseRequest

__all__ = ["LeaseManager", "LeaseRefused"]


class LeaseRefused(Exception):
    """A control request or lease request refused because of the lease (HTTP 423)."""

    def __init__(self, message: str, lease: LeaseInfo | None) -> None:
        super().__init__(message)
        self.lease = lease


@dataclass(frozen=True)
class _Lease:
    info: LeaseInfo
    deadline: float  # wall clock, seconds since the epoch


class LeaseManager:
    """The edge's one lease (thread-safe), kept in ``path`` when given."""

    FILE = "lease.json"

    def __init__(
        self,
        path: Path | None = None,
        *,
        require_lease: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.require_lease = require_lease
        self._clock = clock
        self._lock = threading.Lock()
        self._lease: _Lease | None = self._load()

    def current(self) -> LeaseInfo | None:
        with self._lock:
            lease = self._active()
            return lease.info if lease else None

    def acquire(self, user: str, request: LeaseRequest) -> LeaseInfo:
        """Grant or renew the lease of ``request.holder`` for ``user``; `LeaseRefused` while
        another holder's lease runs. The same user and holder may take it again (a re-run of
        a crashed flow run under its id takes its lease back)."""
        with self._lock:
            lease = self._active()
            if lease is not None and not _owns(lease.info, user, request.holder):
                raise LeaseRefused(_held_message(lease.info, "take the lease"), lease.info)
            now = datetime.now(UTC)
            acquired = lease.info.acquired_at if lease is not None else now
            info = LeaseInfo(
                holder=request.holder,
                user=user,
                acquired_at=acquired,
                expires_at=now + timedelta(seconds=request.ttl_s),
                ttl_s=request.ttl_s,
            )
            self._store(_Lease(info, self._clock() + request.ttl_s))
            return info

    def release(self, user: str, holder: str, *, force: bool = False) -> LeaseInfo | None:
        """End the lease of ``holder`` (``force``: whoever holds it; admins only). Returns the
        ended lease, None when there was none; `LeaseRefused` when another holds it."""
        with self._lock:
            lease = self._active()
            if lease is None:
                return None
            if not force and not _owns(lease.info, user, holder):
                raise LeaseRefused(_held_message(lease.info, "release it"), lease.info)
            self._store(None)
            return lease.info

    def check(self, user: str, holder: str | None) -> None:
        """Let a control request of ``user`` speaking for ``holder`` through, or raise
        `LeaseRefused`."""
        with self._lock:
            lease = self._active()
        if lease is None:
            if self.require_lease:
                raise LeaseRefused(
                    "this edge requires a lease for control: take one with POST /v1/lease "
                    '{"holder": ..., "ttl_s": 30} (EdgeClient.lease(holder=...)) and send '
                    f"its holder in the {LEASE_HEADER} header",
                    None,
                )
            return
        if holder is None or not _owns(lease.info, user, holder):
            raise LeaseRefused(_held_message(lease.info, "control it"), lease.info)

    def _active(self) -> _Lease | None:
        lease = self._lease
        if lease is not None and self._clock() >= lease.deadline:
            self._store(None)
            lease = None
        return lease

    def _store(self, lease: _Lease | None) -> None:
        """Keep ``lease`` (None: no lease) on disk first, then in memory."""
        if self.path is not None:
            try:
                if lease is None:
                    self.path.unlink(missing_ok=True)
                else:
                    tmp = self.path.with_suffix(".json.tmp")
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    tmp.write_text(lease.info.model_dump_json(), encoding="utf-8")
                    os.replace(tmp, self.path)
            except OSError as exc:
                raise JournalError(
                    f"cannot write the microscope lease {self.path}: {exc}; free space or fix "
                    "the permissions of the edge's data dir"
                ) from exc
        self._lease = lease

    def _load(self) -> _Lease | None:
        """The lease an earlier run of this edge left in ``path``, if it still runs."""
        if self.path is None or not self.path.exists():
            return None
        try:
            info = LeaseInfo.model_validate(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            raise JournalError(
                f"the microscope lease {self.path} cannot be read ({exc}); whether a flow run "
                "or person still holds the microscope is unknown, so the edge refuses to "
                "start: restore the file, or delete it once you know nobody holds the "
                "microscope"
            ) from exc
        now = self._clock()
        # a clock set back while the edge was down must not stretch the lease
        deadline = min(info.expires_at.timestamp(), now + info.ttl_s)
        if now >= deadline:
            self.path.unlink(missing_ok=True)
            return None
        return _Lease(info, deadline)


def _owns(info: LeaseInfo, user: str, holder: str) -> bool:
    return info.user == user and info.holder == holder


def _held_message(info: LeaseInfo, what: str) -> str:
    until = info.expires_at.isoformat(timespec="seconds")
    return (
        f"the microscope is leased to {info.holder!r} (user {info.user!r}) until {until} "
        f"unless renewed: to {what}, wait until that lease is released or runs out, or ask "
        "its holder (an admin can break it with DELETE /v1/admin/lease)"
    )
