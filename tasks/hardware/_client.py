"""The blocking edge client: commands over HTTP, frames over TCP, shared memory or WebSocket.

Commands are retried on dropped connections with the same command id, so a retry never repeats
an effect. Frame iteration resumes by itself after a dropped connection, from the next index.
What is said on the wire is in `_edge_calls` and `_stream_session`, shared with the async client.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np
import useq
from websockets.sync.client import connect as ws_connect

from scopeflow import (
    Closeable,
    CommandAck,
    DirectCommand,
    EdgeClientError,
    EdgeState,
    EdgeUnavailable,
    Frame,
    FrameHeader,
    ShmFrameRef,
    ShmRing,
    decode_frame,
    recv_frame,
)

from ._command_channel import CommandChannel
from ._direct_commands import DirectCommands
from ._edge_calls import (
    DEFAULT_EDGE_URL,
    RETRY_DELAYS_S,
    TRANSIENT_ERRORS,
    EdgeCall,
    EdgeClientBase,
    auth_headers,
    command_call,
    events_call,
    frame_call,
    info_call,
    sequence_call,
    state_call,
    timed_out,
    truth_call,
    unreachable,
)
from ._stream_session import (
    HELLO_LIMIT,
    RECONNECT_PAUSE_S,
    FrameResume,
    Transport,
    parse_hello_answer,
    resolve_transport,
    stream_hello,
    stream_host,
    stream_port_from_info,
)

__all__ = ["EdgeClient"]

T = TypeVar("T")


class EdgeClient(EdgeClientBase, DirectCommands, Closeable):
    """Blocking client. ``with EdgeClient(url, token_file=...) as edge: edge.state()``."""

    def __init__(
        self,
        url: str = DEFAULT_EDGE_URL,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(url, token=token, token_file=token_file)
        self._http = httpx.Client(**self._http_options(timeout))
        self._ring: ShmRing | None = None

    def close(self) -> None:
        self._http.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    # requests -------------------------------------------------------------------------------

    def _send(self, call: EdgeCall[T]) -> T:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except TRANSIENT_ERRORS as exc:
                if delay is None:
                    raise unreachable(self.url, exc) from exc
                time.sleep(delay)
                continue
            except httpx.TimeoutException as exc:
                raise timed_out(self.url, exc) from exc
            return call.answer(response)
        raise AssertionError("unreachable")

    def info(self) -> dict[str, Any]:
        return self._send(info_call())

    def state(self) -> EdgeState:
        return self._send(state_call())

    def submit_events(
        self, events: Sequence[useq.MDAEvent | dict[str, Any]], *, command_id: str | None = None
    ) -> CommandAck:
        return self._send(events_call(events, command_id))

    def submit_sequence(
        self, sequence: useq.MDASequence | dict[str, Any], *, command_id: str | None = None
    ) -> CommandAck:
        return self._send(sequence_call(sequence, command_id))

    def command(self, command: DirectCommand, *, command_id: str | None = None) -> CommandAck:
        return self._send(command_call(command, command_id))

    def truth(
        self, region: tuple[float, float, float, float] | None = None, t_s: float | None = None
    ) -> dict[str, Any]:
        """The simulator's ground truth: every cell (in ``region``, stage µm) at time ``t_s``."""
        return self._send(truth_call(region, t_s))

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
        return CommandChannel(
            stream_host(self.url), self._stream_tcp_port(), self._token, timeout=timeout
        )

    def _stream_tcp_port(self) -> int:
        if self._stream_port is None:
            self._stream_port = stream_port_from_info(self.info())
        return self._stream_port

    def frame(self, index: int) -> Frame:
        """One frame by index over HTTP (from memory or the journal)."""
        return self._send(frame_call(index))

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
        resume = FrameResume(self.url, start, stop, reconnect_timeout)
        while resume.wanted:
            try:
                for frame in self._open_stream(resume.next_index, transport, verify):
                    resume.accept(frame)
                    yield frame
                    if not resume.wanted:
                        return
            except (OSError, EdgeUnavailable, ConnectionError) as exc:
                resume.lost(exc)
                time.sleep(RECONNECT_PAUSE_S)

    def _open_stream(self, start: int, transport: Transport, verify: bool) -> Iterator[Frame]:
        resolved = resolve_transport(transport, self.url)
        if resolved == "websocket":
            yield from self._ws_stream(start, verify)
        else:
            yield from self._tcp_stream(start, verify, shm=resolved == "shm")

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
        with socket.create_connection((stream_host(self.url), port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(stream_hello(self._token, start, shm=shm))
            answer = parse_hello_answer(_recv_hello_line(sock), "frame stream")
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
            additional_headers=auth_headers(self._token),
            max_size=None,
            open_timeout=10,
            compression=None,
        ) as ws:
            for message in ws:
                if isinstance(message, str):
                    raise EdgeClientError(f"unexpected text message on the frame stream: {message}")
                yield decode_frame(message, verify=verify)


def _recv_hello_line(sock: socket.socket) -> bytes:
    """The answer line, read byte by byte so that no frame bytes after it are consumed."""
    data = b""
    while not data.endswith(b"\n") and len(data) <= HELLO_LIMIT:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data
