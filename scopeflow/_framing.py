"""Binary framing of one frame, identical on every transport (WebSocket message, TCP stream).

    b"SFF1" | header length (uint32, little endian) | header JSON (UTF-8) | pixel bytes (C order)

The header is a `FrameHeader`; its ``nbytes`` says how many pixel bytes follow. A vendor script
needs nothing but JSON and a byte buffer to read it.

A stream that carries notices (the client asked for them) interleaves, on TCP:

    b"SFN1" | JSON length (uint32, little endian) | notice JSON (UTF-8)

(on the WebSocket: a text message holding the notice JSON). A frame-only reader meets a magic
it does not know and stops with a clear error instead of misreading it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xxhash

from ._errors import EdgeClientError
from ._protocol import CommandDone, EventFailed, FrameHeader, parse_notice

__all__ = [
    "MAGIC",
    "NOTICE_MAGIC",
    "Frame",
    "checksum",
    "decode_frame",
    "encode_notice",
    "encode_prefix",
    "recv_frame",
    "recv_message",
]

MAGIC = b"SFF1"
NOTICE_MAGIC = b"SFN1"
_PREFIX = struct.Struct("<4sI")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as a consumer sees it: the header and the pixels."""

    header: FrameHeader
    pixels: np.ndarray

    @property
    def index(self) -> int:
        return self.header.index


def checksum(pixels: np.ndarray) -> str:
    """The checksum carried in `FrameHeader.checksum`."""
    return "xxh3_64:" + xxhash.xxh3_64_hexdigest(np.ascontiguousarray(pixels))


def encode_prefix(header: FrameHeader) -> bytes:
    """Magic, header length and header JSON: everything that goes ahead of the pixel bytes."""
    body = header.model_dump_json().encode()
    return _PREFIX.pack(MAGIC, len(body)) + body


def encode_notice(notice: EventFailed | CommandDone) -> bytes:
    """A notice as one binary stream message (magic, length, JSON)."""
    body = notice.model_dump_json().encode()
    return _PREFIX.pack(NOTICE_MAGIC, len(body)) + body


def decode_frame(message: bytes | bytearray | memoryview, *, verify: bool = False) -> Frame:
    """Decode one framed message (a whole WebSocket binary message)."""
    view = memoryview(message)
    magic, header_len = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise EdgeClientError(f"not a scopeflow frame (magic {bytes(magic)!r}, expected {MAGIC!r})")
    start = _PREFIX.size
    header = FrameHeader.model_validate_json(bytes(view[start : start + header_len]))
    data = view[start + header_len :]
    if len(data) != header.nbytes:
        raise EdgeClientError(
            f"frame {header.index}: {len(data)} pixel bytes, header says {header.nbytes}"
        )
    pixels = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
    return _verified(Frame(header, pixels)) if verify else Frame(header, pixels)


def recv_frame(
    sock: socket.socket,
    *,
    verify: bool = False,
    resolve: Callable[[FrameHeader], np.ndarray] | None = None,
) -> Frame | None:
    """Read one framed message from a stream socket; ``None`` on a clean end of stream.

    A header with ``shm_slot`` set carries no pixel bytes: ``resolve(header)`` fetches them.
    A notice (a stream opened with ``"notices": true``) raises: read those with `recv_message`.
    """
    message = recv_message(sock, verify=verify, resolve=resolve)
    if message is None or isinstance(message, Frame):
        return message
    raise EdgeClientError(
        f"a notice ({message.type}) on a stream read as frames only: read it with recv_message"
    )


def recv_message(
    sock: socket.socket,
    *,
    verify: bool = False,
    resolve: Callable[[FrameHeader], np.ndarray] | None = None,
) -> Frame | EventFailed | CommandDone | None:
    """Read one message (a frame or a notice) from a stream socket; ``None`` on a clean end."""
    prefix = _recv_exact(sock, _PREFIX.size, allow_eof=True)
    if prefix is None:
        return None
    magic, header_len = _PREFIX.unpack(prefix)
    if magic == NOTICE_MAGIC:
        body = _recv_exact(sock, header_len)
        assert body is not None
        return parse_notice(body)
    if magic != MAGIC:
        raise EdgeClientError(f"not a scopeflow frame stream (magic {magic!r}, expected {MAGIC!r})")
    header_bytes = _recv_exact(sock, header_len)
    assert header_bytes is not None
    header = FrameHeader.model_validate_json(header_bytes)
    if header.shm_slot is not None:
        if resolve is None:
            raise EdgeClientError("frame refers to a shared-memory slot but no ring is attached")
        frame = Frame(header, resolve(header))
    else:
        pixels = np.empty(header.shape, dtype=header.dtype)
        _recv_into(sock, memoryview(pixels).cast("B"))
        frame = Frame(header, pixels)
    return _verified(frame) if verify else frame


def _verified(frame: Frame) -> Frame:
    actual = checksum(frame.pixels)
    if actual != frame.header.checksum:
        raise EdgeClientError(
            f"frame {frame.index}: checksum {actual} does not match header {frame.header.checksum}"
        )
    return frame


def _recv_exact(sock: socket.socket, n: int, *, allow_eof: bool = False) -> bytes | None:
    buf = bytearray(n)
    got = _recv_into(sock, memoryview(buf), allow_eof=allow_eof)
    return None if got == 0 and allow_eof else bytes(buf)


def _recv_into(sock: socket.socket, view: memoryview, *, allow_eof: bool = False) -> int:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            if allow_eof and got == 0:
                return 0
            raise ConnectionError(f"stream closed after {got} of {len(view)} bytes")
        got += n
    return got
