"""The blocking edge client: commands over HTTP, frames over TCP, shared memory or WebSocket.

Commands are retried on dropped connections with the same command id, so a retry never repeats
an effect. Frame iteration resumes by itself after a dropped connection, from the next index.
What is said on the wire is in `_edge_calls` and `_stream_session`, shared with the async client.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np
import useq
from websockets.sync.client import connect as ws_connect

from scopeflow import (
    LEASE_HEADER,
    PROTOCOL_VERSION,
    Closeable,
    CommandAck,
    CommandDone,
    CommandStatus,
    DirectCommand,
    EdgeClientError,
    EdgeState,
    EdgeUnavailable,
    ErrorPolicy,
    EventFailed,
    Frame,
    FrameHeader,
    LeaseInfo,
    ShmFrameRef,
    ShmRing,
    WhoAmI,
    decode_frame,
    parse_notice,
    recv_message,
)

from ._command_channel import CommandChannel, open_stream_socket
from ._direct_commands import DirectCommands
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
    frame_call,
    info_call,
    lease_call,
    sequence_call,
    state_call,
    timed_out,
    truth_call,
    unreachable,
    whoami_call,
)
from ._lease_client import LeaseHold
from ._stream_session import (
    HELLO_LIMIT,
    RECONNECT_PAUSE_S,
    FrameResume,
    Transport,
    check_info,
    check_notices_granted,
    parse_hello_answer,
    resolve_transport,
    stream_hello,
    stream_host,
    stream_port_from_info,
)

__all__ = ["EdgeClient"]

T = TypeVar("T")


class EdgeClient(EdgeClientBase, DirectCommands, Closeable):
    """Blocking client. ``with EdgeClient(url, token_file=...) as edge: edge.state()``.

    ``ca_file``: the CA that signed an ``https`` edge's certificate (else the system's CAs);
    ``holder``: the lease holder its control requests speak for (default: the lease this code
    runs inside, see `lease`).
    """

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
        self._http = httpx.Client(**self._http_options(timeout))
        self._ring: ShmRing | None = None

    def lease(self, holder: str, ttl_s: float = 30.0) -> LeaseHold:
        """``with edge.lease(holder=run_id, ttl_s=30):`` control the microscope alone.

        Takes the lease (`MicroscopeLeased`, saying who holds it and until when, if another
        does), renews it every ``ttl_s / 3`` from a heartbeat thread, releases it on exit; it
        runs out ``ttl_s`` after this process dies. Inside, this client and the edge clients
        created in the same context speak for ``holder``."""
        return LeaseHold(
            self._http_options(self._timeout), self._use_holder, check_response, holder, ttl_s
        )

    def _use_holder(self, holder: str | None) -> None:
        super()._use_holder(holder)
        self._http.headers.update(auth_headers(self._token, self.holder))
        if self.holder is None:
            self._http.headers.pop(LEASE_HEADER, None)

    def close(self) -> None:
        self._http.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    # requests -------------------------------------------------------------------------------

    def _send(self, call: EdgeCall[T]) -> T:
        if not self._protocol_checked and call.path != "/v1/info":
            self.info()  # once per client: refuse an edge of another protocol version
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except TRANSIENT_ERRORS as exc:
                if delay is None or certificate_error(self.url, exc):
                    raise unreachable(self.url, exc) from exc
                time.sleep(delay)
                continue
            except httpx.TimeoutException as exc:
                raise timed_out(self.url, exc) from exc
            return call.answer(response)
        raise AssertionError("unreachable")

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``; raises `EdgeClientError` when the edge speaks another protocol."""
        info = check_info(self._send(info_call()))
        self._protocol_checked = True
        return info

    def whoami(self) -> WhoAmI:
        """``GET /v1/whoami``: the user this client's token belongs to, its role, the lease."""
        return self._send(whoami_call())

    def lease_info(self) -> LeaseInfo | None:
        """The microscope's lease in force (None when it is free)."""
        return self._send(lease_call())

    def state(self) -> EdgeState:
        return self._send(state_call())

    def submit_events(
        self,
        events: Sequence[useq.MDAEvent | dict[str, Any]],
        *,
        command_id: str | None = None,
        tag: str | None = None,
        on_error: ErrorPolicy | str | None = None,
    ) -> CommandAck:
        """Queue ``events``; every frame they produce names ``command_id`` and ``tag``.

        ``on_error``: what the edge does when one fails (`ErrorPolicy`, e.g. ``"skip"`` or
        ``"retry:2"``; an event's ``metadata["on_error"]`` wins; default: retry once, then
        abort the rest of this command). The ack's ``stream_from`` is where to stream from
        to see this command's frames and notices.
        """
        return self._send(events_call(events, command_id, tag, on_error))

    def submit_sequence(
        self,
        sequence: useq.MDASequence | dict[str, Any],
        *,
        command_id: str | None = None,
        tag: str | None = None,
        on_error: ErrorPolicy | str | None = None,
    ) -> CommandAck:
        """Queue a whole sequence (``tag`` and ``on_error`` as in `submit_events`)."""
        return self._send(sequence_call(sequence, command_id, tag, on_error))

    def command_status(self, command_id: str) -> CommandStatus:
        """``GET /v1/commands/{id}``: a queued command's failures and, once over, its outcome."""
        return self._send(command_status_call(command_id))

    def command(self, command: DirectCommand, *, command_id: str | None = None) -> CommandAck:
        return self._send(command_call(command, command_id))

    def truth(
        self, region: tuple[float, float, float, float] | None = None, t_s: float | None = None
    ) -> dict[str, Any]:
        """The simulator's ground truth: every cell (in ``region``, stage µm) at time ``t_s``,
        and ``focus_z_um``: the stage Z at which the cell layer at the region's centre is in
        focus then (tilt and focus drift included)."""
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
            stream_host(self.url),
            self._stream_tcp_port(),
            self._token,
            timeout=timeout,
            tls=self._tls,
            holder=self.holder,
        )

    def _stream_tcp_port(self) -> int:
        if self._stream_port is None:
            self._stream_port = stream_port_from_info(self.info())
        return self._stream_port

    def frame(self, index: int) -> Frame:
        """One frame by index over HTTP (from memory or the journal)."""
        return self._send(frame_call(index))

    # frames ---------------------------------------------------------------------------------

    @overload
    def frames(
        self,
        start: int = 0,
        *,
        stop: int | None = None,
        transport: Transport = "auto",
        verify: bool = False,
        reconnect_timeout: float = 30.0,
        notices: Literal[False] = False,
        shm_pixels: Literal["copy", "defer"] = "copy",
    ) -> Iterator[Frame]: ...

    @overload
    def frames(
        self,
        start: int = 0,
        *,
        stop: int | None = None,
        transport: Transport = "auto",
        verify: bool = False,
        reconnect_timeout: float = 30.0,
        notices: Literal[True],
        shm_pixels: Literal["copy", "defer"] = "copy",
    ) -> Iterator[Frame | EventFailed | CommandDone]: ...

    def frames(
        self,
        start: int = 0,
        *,
        stop: int | None = None,
        transport: Transport = "auto",
        verify: bool = False,
        reconnect_timeout: float = 30.0,
        notices: bool = False,
        shm_pixels: Literal["copy", "defer"] = "copy",
    ) -> Iterator[Any]:
        """Frames ``start``, ``start+1``, ... (up to ``stop``, exclusive), resuming after drops.

        ``transport``: "tcp" (pixels inline), "shm" (pixels through the edge's shared-memory
        ring; same host only), "websocket", or "auto" (shm when the edge is on this host's
        loopback, tcp otherwise).

        ``notices``: also yield the notices (`EventFailed`, `CommandDone`) in their place
        between the frames, so a consumer learns that a command ended or an event failed
        instead of waiting for frames that will not come (notices after frame ``stop - 1``
        are not yielded; stream without ``stop`` and end on your command's `CommandDone`).

        ``shm_pixels``: "copy" reads each shared-memory frame out of the ring as it comes;
        "defer" leaves its ``pixels`` empty (shape (0,)), for a consumer that hands
        ``shm_ref(frame)`` to a worker and reads the pixels only if it needs them
        (``pixels_of(frame.header)``): one copy of the frame fewer on the way.

        A dropped connection is re-opened with ``from=<next index>`` until ``reconnect_timeout``
        passes without success; no frame or notice is skipped or repeated.
        """
        if shm_pixels == "defer" and verify:
            raise ValueError("verify=True checks the pixels, which shm_pixels='defer' skips")
        if not self._protocol_checked:
            self.info()  # the WebSocket has no hello: refuse an edge of another protocol here
        resume = FrameResume(self.url, start, stop, reconnect_timeout)
        while resume.wanted:
            resume.connecting()
            try:
                messages = self._open_stream(
                    resume.next_index, transport, verify, notices, defer=shm_pixels == "defer"
                )
                for message in messages:
                    if not isinstance(message, Frame):
                        if resume.accept_notice(message):
                            yield message
                        continue
                    resume.accept(message)
                    yield message
                    if not resume.wanted:
                        return
            except (OSError, EdgeUnavailable, ConnectionError) as exc:
                resume.lost(exc)
                time.sleep(RECONNECT_PAUSE_S)

    def _open_stream(
        self, start: int, transport: Transport, verify: bool, notices: bool, *, defer: bool = False
    ) -> Iterator[Frame | EventFailed | CommandDone]:
        resolved = resolve_transport(transport, self.url)
        if resolved == "websocket":
            yield from self._ws_stream(start, verify, notices)
        else:
            yield from self._tcp_stream(
                start, verify, shm=resolved == "shm", notices=notices, defer=defer
            )

    def shm_ref(self, frame: Frame) -> ShmFrameRef | None:
        """A reference to ``frame`` in the edge's shared-memory ring (for a worker on this host to
        read it: a few bytes to send instead of the pixels), or None when the frame did not
        come through the ring or its slot has been reused."""
        ring = self._ring
        if ring is None or frame.header.shm_slot is None or not ring.holds(frame.index):
            return None
        h = frame.header
        return ShmFrameRef(ring.name, ring.slots, ring.slot_bytes, h.index, tuple(h.shape), h.dtype)

    def pixels_of(self, header: FrameHeader) -> np.ndarray:
        """The pixels of a frame that came through the shared-memory ring: from the ring while
        its slot holds it, else from the edge's journal (over HTTP)."""
        pixels = None
        if self._ring is not None:
            pixels = self._ring.read(header.index, header.shape, header.dtype)
        if pixels is None:  # overwritten since it was announced: the journal still has it
            pixels = self.frame(header.index).pixels
        return pixels

    def _tcp_stream(
        self,
        start: int,
        verify: bool,
        shm: bool = False,
        notices: bool = False,
        defer: bool = False,
    ) -> Iterator[Frame | EventFailed | CommandDone]:
        port = self._stream_tcp_port()
        with open_stream_socket(stream_host(self.url), port, 10, self._tls, self.url) as sock:
            sock.sendall(stream_hello(self._token, start, shm=shm, notices=notices))
            answer = parse_hello_answer(_recv_hello_line(sock), "frame stream")
            check_notices_granted(answer, notices)
            if (ring := answer.shm) and self._ring is None:
                self._ring = ShmRing.attach(ring.name, ring.slots, ring.slot_bytes)
            sock.settimeout(None)
            while True:
                message = recv_message(
                    sock, verify=verify, resolve=_no_pixels if defer else self.pixels_of
                )
                if message is None:
                    raise ConnectionError("edge closed the frame stream")
                yield message

    def _ws_stream(
        self, start: int, verify: bool, notices: bool = False
    ) -> Iterator[Frame | EventFailed | CommandDone]:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query: dict[str, Any] = {"from": start, "protocol": PROTOCOL_VERSION}
        if notices:
            query["notices"] = "true"
        url = f"{scheme}://{parts.netloc}/v1/frames?{urlencode(query)}"
        try:
            ws_context = ws_connect(
                url,
                additional_headers=auth_headers(self._token),
                max_size=None,
                open_timeout=10,
                compression=None,
                ssl=self._tls if scheme == "wss" else None,
            )
        except ssl.SSLError as exc:
            raise certificate_error(self.url, exc) or exc from exc
        with ws_context as ws:
            for message in ws:
                if isinstance(message, str):
                    if not notices:
                        raise EdgeClientError(
                            f"unexpected text message on the frame stream: {message[:200]}"
                        )
                    yield parse_notice(message)
                    continue
                yield decode_frame(message, verify=verify)


_NO_PIXELS = np.empty(0, np.uint8)


def _no_pixels(header: FrameHeader) -> np.ndarray:
    """``shm_pixels='defer'``: the pixels stay in the ring until someone asks."""
    return _NO_PIXELS


def _recv_hello_line(sock: socket.socket) -> bytes:
    """The answer line, read byte by byte so that no frame bytes after it are consumed."""
    data = b""
    while not data.endswith(b"\n") and len(data) <= HELLO_LIMIT:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data
