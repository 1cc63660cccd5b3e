"""The fast frame stream: plain TCP with the same framing as the WebSocket.

A client opens a connection and sends one `StreamHello` line ``{"token": ..., "from": N}``; the
server answers one `StreamHelloAnswer` line (``{"ok": true, "protocol": 1}`` or ``{"ok": false,
"protocol": 1, "error": ...}``) and then sends every frame from N on, pixels straight from the
frame's memory (no copy). A hello announcing another ``protocol`` than this edge's is refused.

A client on the same host may add ``"shm": true``: the answer then names the shared-memory ring
(``"shm": {"name", "slots", "slot_bytes"}``) and frames still in the ring are sent as a header
with ``shm_slot`` set and no pixel bytes; older frames come inline as usual.

``"notices": true`` adds the notices (`EventFailed`, `CommandDone`) as ``SFN1`` messages, each
before the first frame that followed it (the answer says ``"notices": true``).

A hello ``{"token": ..., "commands": true}`` opens a command channel instead of a frame stream:
one `CommandRequest` per line, one `ChannelAnswer` per line (`_refusals.answer_command`).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable

from pydantic import ValidationError

from scopeflow import (
    PROTOCOL_VERSION,
    ChannelAnswer,
    CommandAck,
    CommandRequest,
    Frame,
    ShmRing,
    ShmRingInfo,
    StreamHello,
    StreamHelloAnswer,
    encode_notice,
    encode_prefix,
    protocol_mismatch,
    role_allows,
)

from ._gate import EdgeGate
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
        access: EdgeGate | str,
        host: str = "127.0.0.1",
        port: int = 0,
        ring: ShmRing | None = None,
        commands: Callable[[CommandRequest], CommandAck] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``access``: the edge's gate (users, roles, lease, audit) or one shared token;
        ``tls``: a server context to speak TLS on every connection."""
        self._hub = hub
        self._commands = commands
        self._gate = EdgeGate.single_token(access) if isinstance(access, str) else access
        self._tls = tls
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
        hub, gate, ring, commands = self._hub, self._gate, self._ring, self._commands
        tls = self._tls

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls is not None:
                    sock.settimeout(_HELLO_TIMEOUT_S)
                    try:  # in the client's thread: a slow handshake holds up no one else
                        sock = tls.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError) as exc:
                        log.info("stream client failed the TLS handshake: %s", exc)
                        return
                hello = _read_hello(sock, gate, ring, commands is not None)
                if hello is None:
                    return
                if hello.commands:
                    assert commands is not None
                    answer = gate.channel_answerer(commands, hello.token, hello.holder)
                    _serve_commands(sock, answer)
                    return
                index = hello.start
                use_ring = hello.shm and ring is not None
                cursor = hub.notice_cursor(index) if hello.notices else None
                try:
                    while not hub.closed:
                        frame = hub.next_message(index, cursor, timeout=0.5)
                        if frame is None:
                            if _peer_left(sock):  # idle: no send would notice it gone
                                return
                            continue
                        if not isinstance(frame, Frame):
                            sock.sendall(encode_notice(frame))
                            cursor = (cursor or 0) + 1
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


def _peer_left(sock: socket.socket) -> bool:
    """Whether the client of an idle frame stream closed its end (it sends nothing after its
    hello, so a readable socket means end of file, a reset, or garbage: all end the stream)."""
    if isinstance(sock, ssl.SSLSocket):  # TLS cannot peek; a TLS record (close_notify) is one
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and not sock.pending()
    try:
        return not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):  # nothing to read: still there
        return False
    except OSError:
        return True


def _serve_commands(sock: socket.socket, answer: Callable[[bytes], ChannelAnswer]) -> None:
    reader = sock.makefile("rb")
    try:
        while line := reader.readline(_COMMAND_MAX):
            if not line.endswith(b"\n"):
                _refuse(sock, f"a command line is longer than {_COMMAND_MAX} bytes")
                return
            sock.sendall(answer(line).line())
    except OSError as exc:  # the client went away; its retry resends the same command id
        log.info("command channel client left: %s", exc)
    finally:
        reader.close()


def _read_hello(
    sock: socket.socket, gate: EdgeGate, ring: ShmRing | None, commands: bool
) -> StreamHello | None:
    """The client's hello, answered; None when it was refused (the refusal is sent)."""
    sock.settimeout(_HELLO_TIMEOUT_S)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = sock.recv(_HELLO_MAX - len(data))
            if not chunk or len(data) + len(chunk) >= _HELLO_MAX:
                return _refuse(sock, 'send one JSON line {"token": ..., "from": N} first')
            data += chunk
        hello = StreamHello.model_validate_json(data)
    except (OSError, ValidationError):
        return _refuse(sock, 'hello is not a JSON object {"token": ..., "from": N} with from >= 0')
    principal = gate.users.authenticate(hello.token)
    if principal is None:
        return _refuse(
            sock, "missing or wrong token: use your token or the one in the edge's --token-file"
        )
    if hello.commands and not role_allows(principal.role, "control"):
        return _refuse(
            sock,
            f"forbidden: user {principal.user!r} has role {principal.role!r}; the command "
            "channel needs a control token (`scopeflow edge user add NAME --role control`)",
        )
    if mismatch := protocol_mismatch(PROTOCOL_VERSION, hello.protocol, by="this edge"):
        return _refuse(sock, mismatch)
    if hello.commands and not commands:
        return _refuse(sock, "this edge offers no command channel; POST /v1/commands instead")
    answer = StreamHelloAnswer(ok=True, protocol=PROTOCOL_VERSION)
    if hello.commands:
        hello = hello.model_copy(update={"shm": False, "notices": False})
    elif hello.shm and ring is not None:
        info = ShmRingInfo(name=ring.name, slots=ring.slots, slot_bytes=ring.slot_bytes)
        answer = answer.model_copy(update={"shm": info})
    if hello.notices:
        answer = answer.model_copy(update={"notices": True})
    sock.settimeout(None)
    sock.sendall(answer.line())
    return hello


def _refuse(sock: socket.socket, error: str) -> None:
    answer = StreamHelloAnswer(ok=False, protocol=PROTOCOL_VERSION, error=error)
    with contextlib.suppress(OSError):
        sock.sendall(answer.line())
    return None
