"""The client side of the microscope lease: take it, keep it alive, give it back.

``with edge.lease(holder="run-42", ttl_s=30):`` takes the lease (`MicroscopeLeased` when
another holder has it), renews it every third of its ttl from a heartbeat thread (so it runs
out ``ttl_s`` after this process dies), and releases it on exit. Inside, the client and every
edge client created in the same context send the holder with their control requests (and
command channels), so the tasks of a flow run need no extra argument; a heartbeat that finds
the lease taken by another (it ran out while this process stalled) records it in ``lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx

from scopeflow import LEASE_HEADER, EdgeClientError, LeaseInfo, LeaseRequest

__all__ = ["AsyncLeaseHold", "LeaseHold", "current_holder"]

log = logging.getLogger(__name__)

_HOLDER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "scopeflow_lease_holder", default=None
)


def current_holder() -> str | None:
    """The holder of the lease this code runs inside (None outside any)."""
    return _HOLDER.get()


class _HoldBase:
    def __init__(
        self,
        options: dict[str, Any],
        set_holder: Callable[[str | None], None],
        check: Callable[[httpx.Response], None],
        holder: str,
        ttl_s: float,
    ) -> None:
        self.request = LeaseRequest(holder=holder, ttl_s=ttl_s)
        self._options = {**options, "headers": {**options["headers"], LEASE_HEADER: holder}}
        self._set_holder = set_holder
        self._check = check
        self._context: contextvars.Token[str | None] | None = None
        self.info: LeaseInfo | None = None
        self.lost: EdgeClientError | None = None
        self.renewals = 0

    @property
    def holder(self) -> str:
        return self.request.holder

    @property
    def interval_s(self) -> float:
        return self.request.ttl_s / 3

    def _granted(self, response: httpx.Response) -> LeaseInfo:
        self._check(response)
        return LeaseInfo.model_validate(response.json())

    def _enter_context(self) -> None:
        self._set_holder(self.holder)
        self._context = _HOLDER.set(self.holder)

    def _exit_context(self) -> None:
        self._set_holder(None)
        if self._context is not None:
            with contextlib.suppress(ValueError):  # left in another context than entered
                _HOLDER.reset(self._context)
            self._context = None

    def _renewed(self, response: httpx.Response) -> bool:
        """Note a heartbeat's answer; False when the lease is gone to another holder."""
        try:
            self.info = self._granted(response)
        except EdgeClientError as exc:
            self.lost = exc
            log.error("lease of %r lost: %s", self.holder, exc)
            return False
        self.renewals += 1
        return True


class LeaseHold(_HoldBase):
    """A lease held by a blocking client (`EdgeClient.lease`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None

    def __enter__(self) -> LeaseHold:
        self._http = httpx.Client(**self._options)
        try:
            self.info = self._granted(self._post())
        except BaseException:
            self._http.close()
            raise
        self._enter_context()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.holder}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 30)
        self._exit_context()
        assert self._http is not None
        try:
            self._http.delete("/v1/lease", params={"holder": self.holder})
        except httpx.HTTPError as error:  # it runs out by itself
            log.warning("could not release the lease of %r: %s", self.holder, error)
        finally:
            self._http.close()

    def _post(self) -> httpx.Response:
        assert self._http is not None
        return self._http.post("/v1/lease", json=self.request.model_dump())

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                response = self._post()
            except httpx.HTTPError as exc:  # the next beat tries again, within the ttl
                log.warning("lease heartbeat of %r failed: %s", self.holder, exc)
                continue
            if not self._renewed(response):
                return


class AsyncLeaseHold(_HoldBase):
    """A lease held by an asyncio client (`AsyncEdgeClient.lease`); the heartbeat is a task."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> AsyncLeaseHold:
        self._http = httpx.AsyncClient(**self._options)
        try:
            self.info = self._granted(await self._post())
        except BaseException:
            await self._http.aclose()
            raise
        self._enter_context()
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._exit_context()
        assert self._http is not None
        try:
            await self._http.delete("/v1/lease", params={"holder": self.holder})
        except httpx.HTTPError as error:
            log.warning("could not release the lease of %r: %s", self.holder, error)
        finally:
            await self._http.aclose()

    async def _post(self) -> httpx.Response:
        assert self._http is not None
        return await self._http.post("/v1/lease", json=self.request.model_dump())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                response = await self._post()
            except httpx.HTTPError as exc:
                log.warning("lease heartbeat of %r failed: %s", self.holder, exc)
                continue
            if not self._renewed(response):
                return
