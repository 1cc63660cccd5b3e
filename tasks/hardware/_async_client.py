"""The asyncio edge client: commands over HTTP, frames over TCP.

It says on the wire exactly what `EdgeClient` says (`_edge_calls`, `_stream_session`): the same
requests, refusals, retries with the same command id, and frame streams that resume after a
dropped connection from the next index, refusing a gap.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import httpx
import numpy as np
import useq

from scopeflow import (
    LEASE_HEADER,
    CommandAck,
    CommandDone,
    CommandStatus,
    DirectCommand,
    EdgeState,
    EdgeUnavailable,
    ErrorPolicy,
    EventFailed,
    Frame,
    FrameHeader,
    LeaseInfo,
    WhoAmI,
    parse_notice,
)

from ._edge_calls import (
    DEFAULT_EDGE_URL,
    RETRY_DELAYS_S,
    TRANSIENT_ERRORS,
    EdgeCall,
    EdgeClientBase,
    auth_headers,
    certificate_error,
    check_response,
    command_call,
    command_status_call,
    events_call,
    info_call,
    lease_call,
    sequence_call,
    state_call,
    timed_out,
    unreachable,
    whoami_call,
)
from ._lease_client import AsyncLeaseHold
from ._stream_session import (
    PREFIX_BYTES,
    RECONNECT_PAUSE_S,
    FrameResume,
    check_info,
    check_notices_granted,
    message_prefix,
    parse_hello_answer,
    stream_hello,
    stream_host,
    stream_port_from_info,
)

__all__ = ["AsyncEdgeClient"]

T = TypeVar("T")
_READ_LIMIT = 2**20


class AsyncEdgeClient(EdgeClientBase):
    """The asyncio twin of `EdgeClient` (commands over HTTP, frames over TCP)."""

    def __init__(
        self,
        url: str = DEFAULT_EDGE_URL,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        timeout: float = 30.0,
        ca_file: Path | None = None,
        holder: str | None = None,
    ) -> None:
        super().__init__(url, token=token, token_file=token_file, ca_file=ca_file, holder=holder)
        self._timeout = timeout
        self._http = httpx.AsyncClient(**self._http_options(timeout))

    def lease(self, holder: str, ttl_s: float = 30.0) -> AsyncLeaseHold:
        """``async with edge.lease(holder=..., ttl_s=30):`` as `EdgeClient.lease`, renewed by
        an asyncio task."""
        return AsyncLeaseHold(
            self._http_options(self._timeout), self._use_holder, check_response, holder, ttl_s
        )

    def _use_holder(self, holder: str | None) -> None:
        super()._use_holder(holder)
        self._http.headers.update(auth_headers(self._token, self.holder))
        if self.holder is None:
            self._http.headers.pop(LEASE_HEADER, None)

    async def __aenter__(self) -> AsyncEdgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: EdgeCall[T]) -> T:
        if not self._protocol_checked and call.path != "/v1/info":
            await self.info()  # once per client: refuse an edge of another protocol version
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except TRANSIENT_ERRORS as exc:
                if delay is None or certificate_error(self.url, exc):
                    raise unreachable(self.url, exc) from exc
                await asyncio.sleep(delay)
                continue
            except httpx.TimeoutException as exc:
                raise timed_out(self.url, exc) from exc
            return call.answer(response)
        raise AssertionError("unreachable")

    async def info(self) -> dict[str, Any]:
        """``GET /v1/info``; raises `EdgeClientError` when the edge speaks another protocol."""
        info = check_info(await self._send(info_call()))
        self._protocol_checked = True
        return info

    async def whoami(self) -> WhoAmI:
        """``GET /v1/whoami``: the user this client's token belongs to, its role, the lease."""
        return await self._send(whoami_call())

    async def lease_info(self) -> LeaseInfo | None:
        """The microscope's lease in force (None when it is free)."""
        return await self._send(lease_call())

    async def state(self) -> EdgeState:
        return await self._send(state_call())

    async def submit_events(
        self,
        events: Sequence[useq.MDAEvent | dict[str, Any]],
        *,
        command_id: str | None = None,
        tag: str | None = None,
        on_error: ErrorPolicy | str | None = None,
    ) -> CommandAck:
        """As `EdgeClient.submit_events`."""
        return await self._send(events_call(events, command_id, tag, on_error))

    async def submit_sequence(
        self,
        sequence: useq.MDASequence | dict[str, Any],
        *,
        command_id: str | None = None,
        tag: str | None = None,
        on_error: ErrorPolicy | str | None = None,
    ) -> CommandAck:
        """As `EdgeClient.submit_sequence`."""
        return await self._send(sequence_call(sequence, command_id, tag, on_error))

    async def command_status(self, command_id: str) -> CommandStatus:
        """As `EdgeClient.command_status`."""
        return await self._send(command_status_call(command_id))

    async def command(self, command: DirectCommand, *, command_id: str | None = None) -> CommandAck:
        return await self._send(command_call(command, command_id))

    @overload
    def frames(
        self,
        start: int = 0,
        *,
        stop: int | None = None,
        reconnect_timeout: float = 30.0,
        notices: Literal[False] = False,
    ) -> AsyncIterator[Frame]: ...

    @overload
    def frames(
        self,
        start: int = 0,
        *,
        stop: int | None = None,
        reconnect_timeout: float = 30.0,
        notices: Literal[True],
    ) -> AsyncIterator[Frame | EventFailed | CommandDone]: ...

    async def frames(
        self,
        start: int = 0,
        *,
        stop: int | None = None,
        reconnect_timeout: float = 30.0,
        notices: bool = False,
    ) -> AsyncIterator[Any]:
        """Frames from ``start`` over TCP, resuming after a dropped connection (no frame
        skipped or repeated; a gap in what the edge sends raises `EdgeClientError`);
        ``notices`` as in `EdgeClient.frames`."""
        resume = FrameResume(self.url, start, stop, reconnect_timeout)
        while resume.wanted:
            resume.connecting()
            try:
                async for message in self._tcp_stream(resume.next_index, notices):
                    if not isinstance(message, Frame):
                        if resume.accept_notice(message):
                            yield message
                        continue
                    resume.accept(message)
                    yield message
                    if not resume.wanted:
                        return
            except (OSError, asyncio.IncompleteReadError, ConnectionError, EdgeUnavailable) as exc:
                resume.lost(exc)
                await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _stream_tcp_port(self) -> int:
        if self._stream_port is None:
            self._stream_port = stream_port_from_info(await self.info())
        return self._stream_port

    async def _tcp_stream(
        self, start: int, notices: bool = False
    ) -> AsyncIterator[Frame | EventFailed | CommandDone]:
        port = await self._stream_tcp_port()
        host = stream_host(self.url)
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                limit=_READ_LIMIT,
                ssl=self._tls,
                server_hostname=host if self._tls is not None else None,
            )
        except ssl.SSLError as exc:
            raise certificate_error(self.url, exc) or exc from exc
        try:
            writer.write(stream_hello(self._token, start, notices=notices))
            await writer.drain()
            answer = parse_hello_answer(await reader.readline(), "frame stream")
            check_notices_granted(answer, notices)
            while True:
                is_notice, length = message_prefix(await reader.readexactly(PREFIX_BYTES))
                if is_notice:
                    yield parse_notice(await reader.readexactly(length))
                    continue
                header = FrameHeader.model_validate_json(await reader.readexactly(length))
                data = await reader.readexactly(header.nbytes)
                pixels = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
                yield Frame(header, pixels)
        finally:
            writer.close()
