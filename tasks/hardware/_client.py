"""Clients of the edge agent, sync and async: commands over HTTP, frames over TCP or WebSocket.

Commands are retried on dropped connections with the same command id, so a retry never repeats
an effect. Frame iteration resumes by itself after a dropped connection, from the next index.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import numpy as np
import useq
from websockets.sync.client import connect as ws_connect

from scopeflow import (
    MAGIC,
    Closeable,
    CommandAck,
    DirectCommand,
    EdgeClientError,
    EdgeRejected,
    EdgeState,
    EdgeUnauthorized,
    EdgeUnavailable,
    Frame,
    FrameHeader,
    ShmFrameRef,
    ShmRing,
    decode_frame,
    new_command_id,
    recv_frame,
)

from ._command_channel import CommandChannel
from ._direct_commands import DirectCommands

__all__ = ["AsyncEdgeClient", "EdgeClient", "Transport", "new_command_id"]

Transport = Literal["auto", "shm", "tcp", "websocket"]
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_RETRIES = 5


def _token(token: str | None, token_file: Path | None) -> str:
    if token:
        return token
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise EdgeClientError(f"cannot read the edge token file {token_file}: {exc}") from exc
    raise EdgeClientError(
        "no edge token: pass token=... or token_file=... (the edge's --token-file)"
    )


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if response.status_code == 401:
        raise EdgeUnauthorized(f"edge refused the token: {detail}")
    message = detail.get("message") if isinstance(detail, dict) else detail
    raise EdgeRejected(
        f"edge refused the request (HTTP {response.status_code}): {message}",
        status_code=response.status_code,
        detail=detail,
    )


def _events_body(events: Sequence[useq.MDAEvent | dict[str, Any]], command_id: str) -> dict:
    return {
        "command_id": command_id,
        "events": [
            e.model_dump(mode="json", exclude_unset=True) if isinstance(e, useq.MDAEvent) else e
            for e in events
        ],
    }


def _sequence_body(sequence: useq.MDASequence | dict[str, Any], command_id: str) -> dict:
    seq = (
        sequence.model_dump(mode="json", exclude_unset=True)
        if isinstance(sequence, useq.MDASequence)
        else sequence
    )
    return {"command_id": command_id, "sequence": seq}


class EdgeClient(DirectCommands, Closeable):
    """Blocking client. ``with EdgeClient(url, token_file=...) as edge: edge.state()``."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
        *,
        token: str | None = None,
        token_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = _token(token, token_file)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=timeout,
        )
        self._stream_port: int | None = None
        self._ring: ShmRing | None = None

    def close(self) -> None:
        self._http.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    # requests -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.2
        for attempt in range(_RETRIES):
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
                if attempt == _RETRIES - 1:
                    raise EdgeUnavailable(
                        f"edge agent at {self.url} is unreachable ({exc}); is `scopeflow edge "
                        "serve` running and is the URL right?"
                    ) from exc
                time.sleep(delay)
                delay *= 2
                continue
            except httpx.TimeoutException as exc:
                raise EdgeUnavailable(f"edge agent at {self.url} timed out: {exc}") from exc
            _raise_for(response)
            return response
        raise AssertionError("unreachable")

    def info(self) -> dict[str, Any]:
        return self._request("GET", "/v1/info").json()

    def state(self) -> EdgeState:
        return EdgeState.model_validate(self._request("GET", "/v1/state").json())

    def submit_events(
        self, events: Sequence[useq.MDAEvent | dict[str, Any]], *, command_id: str | None = None
    ) -> CommandAck:
        body = _events_body(events, command_id or new_command_id("events"))
        return CommandAck.model_validate(self._request("POST", "/v1/events", json=body).json())

    def submit_sequence(
        self, sequence: useq.MDASequence | dict[str, Any], *, command_id: str | None = None
    ) -> CommandAck:
        body = _sequence_body(sequence, command_id or new_command_id("sequence"))
        return CommandAck.model_validate(self._request("POST", "/v1/sequences", json=body).json())

    def command(self, command: DirectCommand, *, command_id: str | None = None) -> CommandAck:
        body = {
            "command_id": command_id or new_command_id(command.type),
            "command": command.model_dump(mode="json"),
        }
        return CommandAck.model_validate(self._request("POST", "/v1/commands", json=body).json())

    def truth(
        self, region: tuple[float, float, float, float] | None = None, t_s: float | None = None
    ) -> dict[str, Any]:
        """The simulator's ground truth: every cell (in ``region``, stage µm) at time ``t_s``."""
        params: dict[str, float] = {}
        if region is not None:
            params.update(zip(("x0", "y0", "x1", "y1"), region, strict=True))
        if t_s is not None:
            params["t_s"] = t_s
        return self._request("GET", "/v1/truth", params=params).json()

    def wait_until_idle(self, timeout: float = 60.0, poll_s: float = 0.05) -> EdgeState:
        """Wait until the queue is empty and every acquired frame is journaled."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if (
                state.run_state == "idle"
                and state.queue_depth == 0
                and state.frames_journaled == state.frames_acquired
            ):
                return state
            if state.last_error:
                raise EdgeClientError(f"edge reported an error: {state.last_error}")
            if time.monotonic() > deadline:
                raise EdgeUnavailable(
                    f"edge still busy after {timeout:g} s ({state.queue_depth} queued, "
                    f"{state.frames_journaled}/{state.frames_acquired} frames journaled)"
                )
            time.sleep(poll_s)

    def command_channel(self, *, timeout: float = 30.0) -> CommandChannel:
        """Direct commands over one open connection to the stream port (no HTTP per command):
        the path for loops that command the stage every frame. Close it when done."""
        host = urlsplit(self.url).hostname or "127.0.0.1"
        return CommandChannel(host, self._stream_tcp_port(), self._token, timeout=timeout)

    def _stream_tcp_port(self) -> int:
        if self._stream_port is None:
            port = self.info()["stream"]["tcp_port"]
            if port is None:
                raise EdgeClientError(
                    "this edge agent offers no TCP stream port; use transport='websocket' for "
                    "frames and the HTTP commands"
                )
            self._stream_port = int(port)
        return self._stream_port

    def frame(self, index: int) -> Frame:
        """One frame by index over HTTP (from memory or the journal)."""
        return decode_frame(self._request("GET", f"/v1/frames/{index}").content)

    # frames ---------------------------------------------------------------------------------

    def frames(
        self,
        start: int = 0,
        *,
        stop: int | None = None,
        transport: Transport = "auto",
        verify: bool = False,
        reconnect_timeout: float = 30.0,
    ) -> Iterator[Frame]:
        """Frames ``start``, ``start+1``, ... (up to ``stop``, exclusive), resuming after drops.

        ``transport``: "tcp" (pixels inline), "shm" (pixels through the edge's shared-memory
        ring; same host only), "websocket", or "auto" (shm when the edge is on this host's
        loopback, tcp otherwise).

        A dropped connection is re-opened with ``from=<next index>`` until ``reconnect_timeout``
        passes without success; no frame is skipped or repeated.
        """
        next_index = start
        down_since: float | None = None
        while stop is None or next_index < stop:
            try:
                for frame in self._open_stream(next_index, transport, verify):
                    down_since = None
                    if frame.index != next_index:
                        raise EdgeClientError(
                            f"stream gap: expected frame {next_index}, got {frame.index}"
                        )
                    next_index += 1
                    yield frame
                    if stop is not None and next_index >= stop:
                        return
            except (OSError, EdgeUnavailable, ConnectionError) as exc:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > reconnect_timeout:
                    raise EdgeUnavailable(
                        f"frame stream from {self.url} lost at frame {next_index} and not back "
                        f"after {reconnect_timeout:g} s: {exc}"
                    ) from exc
                time.sleep(0.1)

    def _open_stream(self, start: int, transport: Transport, verify: bool) -> Iterator[Frame]:
        if transport == "auto":
            local = (urlsplit(self.url).hostname or "") in _LOOPBACK
            transport = "shm" if local else "tcp"
        if transport == "websocket":
            yield from self._ws_stream(start, verify)
        else:
            yield from self._tcp_stream(start, verify, shm=transport == "shm")

    def shm_ref(self, frame: Frame) -> ShmFrameRef | None:
        """A reference to ``frame`` in the edge's shared-memory ring (for a worker on this host to
        read it: a few bytes to send instead of the pixels), or None when the frame did not
        come through the ring or its slot has been reused."""
        ring = self._ring
        if ring is None or frame.header.shm_slot is None or not ring.holds(frame.index):
            return None
        h = frame.header
        return ShmFrameRef(ring.name, ring.slots, ring.slot_bytes, h.index, tuple(h.shape), h.dtype)

    def _pixels_from_ring(self, header: FrameHeader) -> np.ndarray:
        assert self._ring is not None
        pixels = self._ring.read(header.index, header.shape, header.dtype)
        if pixels is None:  # overwritten since it was announced: the journal still has it
            pixels = self.frame(header.index).pixels
        return pixels

    def _tcp_stream(self, start: int, verify: bool, shm: bool = False) -> Iterator[Frame]:
        port = self._stream_tcp_port()
        host = urlsplit(self.url).hostname or "127.0.0.1"
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = {"token": self._token, "from": start, "shm": shm}
            sock.sendall(json.dumps(hello).encode() + b"\n")
            answer = _read_line(sock)
            if not answer.get("ok"):
                error = answer.get("error", "refused")
                if "token" in error:
                    raise EdgeUnauthorized(f"frame stream refused: {error}")
                raise EdgeClientError(f"frame stream refused: {error}")
            if (ring := answer.get("shm")) and self._ring is None:
                self._ring = ShmRing.attach(ring["name"], ring["slots"], ring["slot_bytes"])
            sock.settimeout(None)
            while True:
                frame = recv_frame(sock, verify=verify, resolve=self._pixels_from_ring)
                if frame is None:
                    raise ConnectionError("edge closed the frame stream")
                yield frame

    def _ws_stream(self, start: int, verify: bool) -> Iterator[Frame]:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = f"{scheme}://{parts.netloc}/v1/frames?from={start}"
        with ws_connect(
            url,
            additional_headers={"Authorization": f"Bearer {self._token}"},
            max_size=None,
            open_timeout=10,
            compression=None,
        ) as ws:
            for message in ws:
                if isinstance(message, str):
                    raise EdgeClientError(f"unexpected text message on the frame stream: {message}")
                yield decode_frame(message, verify=verify)


def _read_line(sock: socket.socket, limit: int = 4096) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("edge closed the stream during the hello")
        data += chunk
        if len(data) > limit:
            raise EdgeClientError("hello answer too long: is this a scopeflow frame stream?")
    return json.loads(data)


class AsyncEdgeClient:
    """The asyncio twin of `EdgeClient` (commands over HTTP, frames over TCP)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
        *,
        token: str | None = None,
        token_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = _token(token, token_file)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {self._token}"}, timeout=timeout
        )
        self._stream_port: int | None = None

    async def __aenter__(self) -> AsyncEdgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.2
        for attempt in range(_RETRIES):
            try:
                response = await self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
                if attempt == _RETRIES - 1:
                    raise EdgeUnavailable(
                        f"edge agent at {self.url} is unreachable: {exc}"
                    ) from exc
                await asyncio.sleep(delay)
                delay *= 2
                continue
            except httpx.TimeoutException as exc:
                raise EdgeUnavailable(f"edge agent at {self.url} timed out: {exc}") from exc
            _raise_for(response)
            return response
        raise AssertionError("unreachable")

    async def info(self) -> dict[str, Any]:
        return (await self._request("GET", "/v1/info")).json()

    async def state(self) -> EdgeState:
        return EdgeState.model_validate((await self._request("GET", "/v1/state")).json())

    async def submit_events(
        self, events: Sequence[useq.MDAEvent | dict[str, Any]], *, command_id: str | None = None
    ) -> CommandAck:
        body = _events_body(events, command_id or new_command_id("events"))
        return CommandAck.model_validate(
            (await self._request("POST", "/v1/events", json=body)).json()
        )

    async def submit_sequence(
        self, sequence: useq.MDASequence | dict[str, Any], *, command_id: str | None = None
    ) -> CommandAck:
        body = _sequence_body(sequence, command_id or new_command_id("sequence"))
        response = await self._request("POST", "/v1/sequences", json=body)
        return CommandAck.model_validate(response.json())

    async def command(self, command: DirectCommand, *, command_id: str | None = None) -> CommandAck:
        body = {
            "command_id": command_id or new_command_id(command.type),
            "command": command.model_dump(mode="json"),
        }
        response = await self._request("POST", "/v1/commands", json=body)
        return CommandAck.model_validate(response.json())

    async def frames(
        self, start: int = 0, *, stop: int | None = None, reconnect_timeout: float = 30.0
    ) -> AsyncIterator[Frame]:
        """Frames from ``start`` over TCP, resuming after a dropped connection."""
        next_index = start
        down_since: float | None = None
        while stop is None or next_index < stop:
            try:
                async for frame in self._tcp_stream(next_index):
                    down_since = None
                    next_index += 1
                    yield frame
                    if stop is not None and next_index >= stop:
                        return
            except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > reconnect_timeout:
                    raise EdgeUnavailable(
                        f"frame stream lost at frame {next_index}: {exc}"
                    ) from exc
                await asyncio.sleep(0.1)

    async def _tcp_stream(self, start: int) -> AsyncIterator[Frame]:
        if self._stream_port is None:
            self._stream_port = int((await self.info())["stream"]["tcp_port"])
        host = urlsplit(self.url).hostname or "127.0.0.1"
        reader, writer = await asyncio.open_connection(host, self._stream_port, limit=2**20)
        try:
            writer.write(json.dumps({"token": self._token, "from": start}).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await reader.readline())
            if not answer.get("ok"):
                raise EdgeUnauthorized(f"frame stream refused: {answer.get('error')}")
            while True:
                prefix = await reader.readexactly(8)
                if prefix[:4] != MAGIC:
                    raise EdgeClientError("not a scopeflow frame stream")
                header_len = int.from_bytes(prefix[4:], "little")
                header = FrameHeader.model_validate_json(await reader.readexactly(header_len))
                data = await reader.readexactly(header.nbytes)
                pixels = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
                yield Frame(header, pixels)
        finally:
            writer.close()
