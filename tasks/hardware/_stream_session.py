"""The client side of the edge's TCP stream port, without the I/O: the hello and its answer, the
frame prefix, and the bookkeeping that resumes a frame iteration after a dropped connection.
Shared by `EdgeClient`, `AsyncEdgeClient` and `CommandChannel`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from scopeflow import MAGIC, EdgeClientError, EdgeUnauthorized, EdgeUnavailable, Frame

__all__ = [
    "HELLO_LIMIT",
    "PREFIX_BYTES",
    "RECONNECT_PAUSE_S",
    "FrameResume",
    "Transport",
    "channel_hello",
    "check_hello_answer",
    "frame_header_length",
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


def stream_hello(token: str, start: int, *, shm: bool = False) -> bytes:
    """The first line of a frame stream: frames from ``start`` on (``shm``: through the ring)."""
    return json.dumps({"token": token, "from": start, "shm": shm}).encode() + b"\n"


def channel_hello(token: str) -> bytes:
    """The first line of a command channel."""
    return json.dumps({"token": token, "commands": True}).encode() + b"\n"


def parse_hello_answer(line: bytes, what: str) -> dict[str, Any]:
    """The edge's answer line to a hello; raises when the edge refused ``what``."""
    if len(line) > HELLO_LIMIT:
        raise EdgeClientError("hello answer too long: is this a scopeflow frame stream?")
    if not line.endswith(b"\n"):
        raise ConnectionError(f"edge closed the {what} during the hello")
    answer: dict[str, Any] = json.loads(line)
    check_hello_answer(answer, what)
    return answer


def check_hello_answer(answer: dict[str, Any], what: str) -> None:
    """Raise `EdgeUnauthorized` (wrong token) or `EdgeClientError` when ``answer`` is a refusal."""
    if answer.get("ok"):
        return
    error = str(answer.get("error", "refused"))
    if "token" in error:
        raise EdgeUnauthorized(f"{what} refused: {error}")
    raise EdgeClientError(f"{what} refused: {error}")


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

    def lost(self, exc: BaseException) -> None:
        """The connection dropped: return to retry, or raise when it has been down too long."""
        now = time.monotonic()
        self._down_since = self._down_since or now
        if now - self._down_since > self.reconnect_timeout:
            raise EdgeUnavailable(
                f"frame stream from {self.url} lost at frame {self.next_index} and not back "
                f"after {self.reconnect_timeout:g} s: {exc}"
            ) from exc
