"""Take a microscope's lease for an automation, waiting (bounded) while another holder has it.

A reaction to an event (re-queue an anomalous tile) is a controller of its own: it must not
steer a microscope that a flow run or a person leases, and it has no authority to act for
them. So it waits until the lease is released or runs out, saying why in its log, then takes
the lease itself for as long as it acts (so nobody starts in the middle of it); past
``wait_s`` it gives up with who holds the microscope and until when.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from scopeflow import MicroscopeLeased
from tasks.hardware import EdgeClient, LeaseHold

__all__ = ["LeaseWait", "lease_when_free"]


@dataclass
class LeaseWait:
    """How long an automation waited for the microscope, and for whom."""

    waited_s: float = 0.0
    refusals: int = 0
    holders: list[str] = field(default_factory=list)


@contextlib.contextmanager
def lease_when_free(
    edge: EdgeClient,
    holder: str,
    *,
    ttl_s: float,
    wait_s: float,
    logger: logging.Logger | logging.LoggerAdapter,
    why: str,
) -> Iterator[tuple[LeaseHold, LeaseWait]]:
    """Hold ``edge``'s lease as ``holder`` inside the block, once it is free (at most
    ``wait_s`` of waiting; `MicroscopeLeased` naming the holder after that)."""
    wait = LeaseWait()
    started = time.monotonic()
    delay = 0.5
    while True:
        try:
            hold = edge.lease(holder=holder, ttl_s=ttl_s)
            hold.__enter__()
            break
        except MicroscopeLeased as leased:
            info = leased.lease
            wait.refusals += 1
            name = f"{info.get('holder')} (user {info.get('user')})"
            if name not in wait.holders:
                wait.holders.append(name)
            waited = time.monotonic() - started
            if waited >= wait_s:
                raise MicroscopeLeased(
                    f"{why}: the microscope stayed leased to {name} for the {wait_s:g} s this "
                    f"automation waits (lease until {info.get('expires_at')}); run it again "
                    "once that lease ends (or raise lease_wait_s)",
                    status_code=leased.status_code,
                    detail=leased.detail,
                ) from leased
            logger.info(
                "%s: waiting, the microscope is leased to %s until %s unless renewed "
                "(%.0f of at most %g s waited)",
                why, name, info.get("expires_at"), waited, wait_s,
            )  # fmt: skip
            time.sleep(min(delay, max(0.0, wait_s - waited)))
            delay = min(delay * 2, 10.0)
    wait.waited_s = time.monotonic() - started
    try:
        yield hold, wait
    finally:
        hold.__exit__(None, None, None)
