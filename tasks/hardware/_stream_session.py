"""The client side of the edge's TCP stream port, without the I/O: the hello and its answer
(`StreamHello`, `StreamHelloAnswer`, with the protocol version check), the message prefix, and
the bookkeeping that resumes a frame iteration after a dropped connection. Shared by
`EdgeClient`, `AsyncEdgeClient` and `CommandChannel`.
"""

from __future__ import annotations

import time
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from scopeflow import (
    MAGIC,
    NOTICE_MAGIC,
    PROTOCOL_VERSION,
    CommandDone,
    EdgeClientError,
    EdgeForbidden,
    EdgeUnauthorized,
    EdgeUnavailable,
    EventFailed,
    Frame,
    StreamHello,
    StreamHelloAnswer,
    protocol_mismatch,
)

__all__ = [
    "HELLO_LIMIT",
    "PREFIX_BYTES",
    "RECONNECT_PAUSE_S",
    "FrameResume",
    "Transport",
    "channel_hello",
    "check_hello_answer",
    "check_info",
    "check_notices_granted",
    "frame_header_length",
    "message_prefix",
    "parse_hello_answer",
    "resolve_transport",
    "stream_hello",
    "stream_host",
    "stream_port_from_info",
]

Transport = Literal["auto", "shm", "tcp", "websocket"]

HELLO_LIMIT = 4096  # bytes of a hello answer line; a longer one is not a scopeflow edge
PREFIX_BYTES = 8  # MAGIC (4 bytes) + header length (uint32, little-endian)
RECONNECT_PAUSE_S = 0.1
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def stream_host(url: str) -> str:
    """The host of the edge's stream port: the host of its HTTP URL."""
    return urlsplit(url).hostname or "127.0.0.1"


def resolve_transport(transport: Transport, url: str) -> Literal["shm", "tcp", "websocket"]:
    """``auto`` is shm when the edge is on this host's loopback, tcp otherwise."""
    if transport != "auto":
        return transport
    return "shm" if (urlsplit(url).hostname or "") in _LOOPBACK else "tcp"


def stream_port_from_info(info: dict[str, Any]) -> int:
    """The TCP stream port named in ``GET /v1/info``."""
    port = info["stream"]["tcp_port"]
    if port is None:
        raise EdgeClientError(
            "this edge agent offers no TCP stream port; use transport='websocket' for "
            "frames and the HTTP commands"
        )
    return int(port)


def stream_hello(token: str, start: int, *, shm: bool = False, notices: bool = False) -> bytes:
    """The first line of a frame stream: frames from ``start`` on (``shm``: through the ring;
    ``notices``: with the notices between them)."""
    hello = StreamHello(
        token=token, start=start, shm=shm, notices=notices, protocol=PROTOCOL_VERSION
    )
    return hello.line()


def channel_hello(token: str, holder: str | None = None) -> bytes:
    """The first line of a command channel (``holder``: the lease holder it speaks for)."""
    return StreamHello(token=token, commands=True, protocol=PROTOCOL_VERSION, holder=holder).line()


def parse_hello_answer(line: bytes, what: str) -> StreamHelloAnswer:
    """The edge's answer line to a hello; raises when the edge refused ``what`` or speaks
    another protocol version."""
    if len(line) > HELLO_LIMIT:
        raise EdgeClientError("hello answer too long: is this a scopeflow frame stream?")
    if not line.endswith(b"\n"):
        raise ConnectionError(f"edge closed the {what} during the hello")
    try:
        answer = StreamHelloAnswer.model_validate_json(line)
    except ValidationError as exc:
        raise EdgeClientError(
            f"{what}: the answer to the hello is not a scopeflow answer ({line[:80]!r}); is "
            "the stream port right?"
        ) from exc
    check_hello_answer(answer, what)
    return answer


def check_hello_answer(answer: StreamHelloAnswer | dict[str, Any], what: str) -> None:
    """Raise `EdgeUnauthorized` (wrong token) or `EdgeClientError` when ``answer`` is a refusal
    or names another protocol version than this client's."""
    if isinstance(answer, dict):
        answer = StreamHelloAnswer.model_validate(answer)
    if mismatch := protocol_mismatch(answer.protocol, PROTOCOL_VERSION, by="this client"):
        raise EdgeClientError(f"{what}: {mismatch}")
    if answer.ok:
        return
    error = answer.error or "refused"
    if error.startswith("forbidden"):
        raise EdgeForbidden(f"{what} refused: {error}", status_code=403, detail=error)
    if "token" in error:
        raise EdgeUnauthorized(f"{what} refused: {error}")
    raise EdgeClientError(f"{what} refused: {error}")


def check_notices_granted(answer: StreamHelloAnswer, wanted: bool) -> None:
    """Raise when notices were asked for and the edge does not send them (an older edge)."""
    if wanted and not answer.notices:
        raise EdgeClientError(
            "this edge does not send notices (it predates them): upgrade scopeflow on the "
            "edge, or stream frames without notices=True"
        )


def check_info(info: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/info``, once its protocol version is checked against this client's."""
    if mismatch := protocol_mismatch(info.get("protocol"), PROTOCOL_VERSION, by="this client"):
        raise EdgeClientError(f"edge API: {mismatch}")
    return info


def message_prefix(prefix: bytes) -> tuple[bool, int]:
    """From a message's 8-byte prefix: whether it is a notice, and the JSON's length."""
    magic = prefix[:4]
    if magic not in (MAGIC, NOTICE_MAGIC):
        raise EdgeClientError(f"not a scopeflow frame stream (magic {magic!r}, expected {MAGIC!r})")
    return magic == NOTICE_MAGIC, int.from_bytes(prefix[4:PREFIX_BYTES], "little")


def frame_header_length(prefix: bytes) -> int:
    """The JSON header's length from a frame's 8-byte prefix."""
    if prefix[:4] != MAGIC:
        raise EdgeClientError(
            f"not a scopeflow frame stream (magic {prefix[:4]!r}, expected {MAGIC!r})"
        )
    return int.from_bytes(prefix[4:PREFIX_BYTES], "little")


class FrameResume:
    """Where a resuming frame iteration stands: the next index it wants, since when the
    stream is down. Every frame must be the next index; a drop is forgiven for
    ``reconnect_timeout`` seconds, then it raises `EdgeUnavailable`.
    """

    def __init__(self, url: str, start: int, stop: int | None, reconnect_timeout: float) -> None:
        self.url = url
        self.next_index = start
        self.stop = stop
        self.reconnect_timeout = reconnect_timeout
        self._down_since: float | None = None
        self._notices_given = 0  # notices delivered since the last frame (all at next_index)
        self._notices_seen = 0  # ... and seen on this connection (a resumed one repeats them)

    def connecting(self) -> None:
        """A (new) connection starts from ``next_index``: it repeats the notices there."""
        self._notices_seen = 0

    @property
    def wanted(self) -> bool:
        """More frames are wanted (the iteration goes on)."""
        return self.stop is None or self.next_index < self.stop

    def accept(self, frame: Frame) -> None:
        """Count ``frame`` as delivered; raise when it is not the next index (a gap)."""
        self._down_since = None
        if frame.index != self.next_index:
            raise EdgeClientError(
                f"stream gap: expected frame {self.next_index}, got {frame.index}"
            )
        self.next_index += 1
        self._notices_given = self._notices_seen = 0

    def accept_notice(self, notice: EventFailed | CommandDone) -> bool:
        """Whether to deliver ``notice``: False for one a resumed connection repeats."""
        self._down_since = None
        if notice.position != self.next_index:
            raise EdgeClientError(
                f"stream gap: a notice at position {notice.position} came before frame "
                f"{self.next_index}"
            )
        self._notices_seen += 1
        if self._notices_seen <= self._notices_given:
            return False
        self._notices_given += 1
        return True

    def lost(self, exc: BaseException) -> None:
        """The connection dropped: return to retry, or raise when it has been down too long."""
        now = time.monotonic()
        self._down_since = self._down_since or now
        if now - self._down_since > self.reconnect_timeout:
            raise EdgeUnavailable(
                f"frame stream from {self.url} lost at frame {self.next_index} and not back "
                f"after {self.reconnect_timeout:g} s: {exc}"
            ) from exc
