"""The fast frame stream: plain TCP with the same framing as the WebSocket.

A client opens a connection and sends one JSON line ``{"token": ..., "from": N}``; the server
answers one JSON line (``{"ok": true, "protocol": 1}`` or ``{"ok": false, "error": ...}``) and then
sends every frame from N on, pixels straight from the frame's memory (no copy).

A client on the same host may add ``"shm": true``: the answer then names the shared-memory ring
(``"shm": {"name", "slots", "slot_bytes"}``) and frames still in the ring are sent as a header
with ``shm_slot`` set and no pixel bytes; older frames come inline as usual.

A hello ``{"token": ..., "commands": true}`` opens a command channel instead of a frame stream
(``_command_channel``): one command request per line, one answer per line.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable

from scopeflow import PROTOCOL_VERSION, CommandAck, CommandRequest, ShmRing, encode_prefix

from ._command_channel import answer_command
from ._hub import FrameHub

__all__ = ["FrameStreamServer"]

log = logging.getLogger(__name__)
_HELLO_MAX = 4096
_HELLO_TIMEOUT_S = 10.0
_COMMAND_MAX = 1 << 16


class FrameStreamServer:
    """Serves the hub's frames (and, given ``commands``, a command channel) to TCP clients, one
    thread per client."""

    def __init__(
        self,
        hub: FrameHub,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        ring: ShmRing | None = None,
        commands: Callable[[CommandRequest], CommandAck] | None = None,
    ) -> None:
        self._hub = hub
        self._commands = commands
        self._token = token
        self._ring = ring
        handler = self._make_handler()
        self._server = socketserver.ThreadingTCPServer(
            (host, port), handler, bind_and_activate=False
        )
        self._server.allow_reuse_address = True
        self._server.daemon_threads = True
        self._server.server_bind()
        self._server.server_activate()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="frame-stream", daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _make_handler(self) -> type[socketserver.BaseRequestHandler]:
        hub, token, ring, commands = self._hub, self._token, self._ring, self._commands

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                hello = _read_hello(sock, token, ring, commands is not None)
                if hello is None:
                    return
                index, use_ring, command_mode = hello
                if command_mode:
                    assert commands is not None
                    _serve_commands(sock, commands)
                    return
                try:
                    while not hub.closed:
                        frame = hub.get(index, timeout=0.5)
                        if frame is None:
                            continue
                        if use_ring and ring is not None and ring.holds(index):
                            slot = index % ring.slots
                            sock.sendall(
                                encode_prefix(frame.header.model_copy(update={"shm_slot": slot}))
                            )
                        else:
                            sock.sendall(encode_prefix(frame.header))
                            sock.sendall(memoryview(frame.pixels).cast("B"))
                        index += 1
                except OSError as exc:  # the consumer went away; it resumes with from=index
                    log.info("stream client left at frame %d: %s", index, exc)

        return Handler


def _serve_commands(sock: socket.socket, run: Callable[[CommandRequest], CommandAck]) -> None:
    reader = sock.makefile("rb")
    try:
        while line := reader.readline(_COMMAND_MAX):
            if not line.endswith(b"\n"):
                _refuse(sock, f"a command line is longer than {_COMMAND_MAX} bytes")
                return
            sock.sendall(json.dumps(answer_command(run, line)).encode() + b"\n")
    except OSError as exc:  # the client went away; its retry resends the same command id
        log.info("command channel client left: %s", exc)
    finally:
        reader.close()


def _read_hello(
    sock: socket.socket, token: str, ring: ShmRing | None, commands: bool
) -> tuple[int, bool, bool] | None:
    sock.settimeout(_HELLO_TIMEOUT_S)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = sock.recv(_HELLO_MAX - len(data))
            if not chunk or len(data) + len(chunk) >= _HELLO_MAX:
                return _refuse(sock, 'send one JSON line {"token": ..., "from": N} first')
            data += chunk
        hello = json.loads(data)
        start = int(hello.get("from", 0))
        given = str(hello.get("token", ""))
        wants_ring = bool(hello.get("shm", False))
        wants_commands = bool(hello.get("commands", False))
    except (OSError, ValueError, AttributeError):
        return _refuse(sock, 'hello is not a JSON object {"token": ..., "from": N}')
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _refuse(sock, "missing or wrong token: use the token from the edge's --token-file")
    if start < 0:
        return _refuse(sock, "'from' must be >= 0")
    if wants_commands and not commands:
        return _refuse(sock, "this edge offers no command channel; POST /v1/commands instead")
    answer: dict[str, object] = {"ok": True, "protocol": PROTOCOL_VERSION}
    use_ring = wants_ring and ring is not None
    if use_ring:
        assert ring is not None
        answer["shm"] = {"name": ring.name, "slots": ring.slots, "slot_bytes": ring.slot_bytes}
    sock.settimeout(None)
    sock.sendall(json.dumps(answer).encode() + b"\n")
    return start, use_ring and not wants_commands, wants_commands


def _refuse(sock: socket.socket, error: str) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(json.dumps({"ok": False, "error": error}).encode() + b"\n")
    return None
