"""The asyncio edge client: commands over HTTP, frames over TCP.

It says on the wire exactly what `EdgeClient` says (`_edge_calls`, `_stream_session`): the same
requests, refusals, retries with the same command id, and frame streams that resume after a
dropped connection from the next index, refusing a gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import useq

from scopeflow import (
    CommandAck,
    DirectCommand,
    EdgeState,
    EdgeUnavailable,
    Frame,
    FrameHeader,
)

from ._edge_calls import (
    DEFAULT_EDGE_URL,
    RETRY_DELAYS_S,
    TRANSIENT_ERRORS,
    EdgeCall,
    EdgeClientBase,
    command_call,
    events_call,
    info_call,
    sequence_call,
    state_call,
    timed_out,
    unreachable,
)
from ._stream_session import (
    PREFIX_BYTES,
    RECONNECT_PAUSE_S,
    FrameResume,
    frame_header_length,
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
    ) -> None:
        super().__init__(url, token=token, token_file=token_file)
        self._http = httpx.AsyncClient(**self._http_options(timeout))

    async def __aenter__(self) -> AsyncEdgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: EdgeCall[T]) -> T:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except TRANSIENT_ERRORS as exc:
                if delay is None:
                    raise unreachable(self.url, exc) from exc
                await asyncio.sleep(delay)
                continue
            except httpx.TimeoutException as exc:
                raise timed_out(self.url, exc) from exc
            return call.answer(response)
        raise AssertionError("unreachable")

    async def info(self) -> dict[str, Any]:
        return await self._send(info_call())

    async def state(self) -> EdgeState:
        return await self._send(state_call())

    async def submit_events(
        self, events: Sequence[useq.MDAEvent | dict[str, Any]], *, command_id: str | None = None
    ) -> CommandAck:
        return await self._send(events_call(events, command_id))

    async def submit_sequence(
        self, sequence: useq.MDASequence | dict[str, Any], *, command_id: str | None = None
    ) -> CommandAck:
        return await self._send(sequence_call(sequence, command_id))

    async def command(self, command: DirectCommand, *, command_id: str | None = None) -> CommandAck:
        return await self._send(command_call(command, command_id))

    async def frames(
        self, start: int = 0, *, stop: int | None = None, reconnect_timeout: float = 30.0
    ) -> AsyncIterator[Frame]:
        """Frames from ``start`` over TCP, resuming after a dropped connection (no frame
        skipped or repeated; a gap in what the edge sends raises `EdgeClientError`)."""
        resume = FrameResume(self.url, start, stop, reconnect_timeout)
        while resume.wanted:
            try:
                async for frame in self._tcp_stream(resume.next_index):
                    resume.accept(frame)
                    yield frame
                    if not resume.wanted:
                        return
            except (OSError, asyncio.IncompleteReadError, ConnectionError, EdgeUnavailable) as exc:
                resume.lost(exc)
                await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _stream_tcp_port(self) -> int:
        if self._stream_port is None:
            self._stream_port = stream_port_from_info(await self.info())
        return self._stream_port

    async def _tcp_stream(self, start: int) -> AsyncIterator[Frame]:
        port = await self._stream_tcp_port()
        reader, writer = await asyncio.open_connection(
            stream_host(self.url), port, limit=_READ_LIMIT
        )
        try:
            writer.write(stream_hello(self._token, start))
            await writer.drain()
            parse_hello_answer(await reader.readline(), "frame stream")
            while True:
                header_length = frame_header_length(await reader.readexactly(PREFIX_BYTES))
                header = FrameHeader.model_validate_json(await reader.readexactly(header_length))
                data = await reader.readexactly(header.nbytes)
                pixels = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
                yield Frame(header, pixels)
        finally:
            writer.close()
