"""A shared-memory ring of frame slots, for consumers on the same host as the edge agent.

Slot ``index % slots`` holds frame ``index``: two 8-byte stamps around the pixels form a seqlock.
The writer sets ``begin = index + 1``, copies the pixels, then sets ``end = index + 1``; a reader
checks ``end`` before its copy and ``begin`` after it, so a slot overwritten under it (a reader
more than ``slots`` frames behind) is detected, never returned torn.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import threading
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

__all__ = ["ShmFrameRef", "ShmRing", "ShmRingUnavailable"]

_STAMP = struct.Struct("<q")
_SLOT_HEADER = 16
_SHM_DIR = "/dev/shm"


class ShmRingUnavailable(RuntimeError):
    """The host's shared memory has no room for the ring (nothing was created)."""


class ShmRing:
    """Create with `ShmRing.create` (the edge) or attach with `ShmRing.attach` (a consumer)."""

    def __init__(
        self, shm: shared_memory.SharedMemory, slots: int, slot_bytes: int, owner: bool
    ) -> None:
        self._shm = shm
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._owner = owner
        self._buf = shm.buf

    @property
    def name(self) -> str:
        return self._shm.name

    @classmethod
    def create(cls, slots: int, slot_bytes: int) -> ShmRing:
        """A new ring, its memory reserved up front: ShmRingUnavailable (naming the room asked
        for and the room free) when the host's shared memory cannot hold it. A ring written
        into memory that is not there would kill the writing process (SIGBUS) mid-run."""
        size = slots * (slot_bytes + _SLOT_HEADER)
        _check_room(size)
        shm = shared_memory.SharedMemory(create=True, size=size)
        try:
            _reserve(shm, size)
        except OSError as exc:
            shm.close()
            shm.unlink()
            if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                raise
            raise ShmRingUnavailable(_no_room(size, _room())) from exc
        # touch every page now: a first write into a fresh slot otherwise takes a page fault
        # per 4 KiB on the frame's path (~0.4 ms for a 512² frame), for the ring's first laps
        np.frombuffer(shm.buf, np.uint8)[:] = 0
        return cls(shm, slots, slot_bytes, True)

    @classmethod
    def attach(cls, name: str, slots: int, slot_bytes: int) -> ShmRing:
        shm = shared_memory.SharedMemory(name=name)
        # Python < 3.13 registers attached segments too and would unlink the edge's ring when
        # this consumer exits; only the creator may unlink it.
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]  # noqa: SLF001 - no public name
        return cls(shm, slots, slot_bytes, False)

    def _offset(self, index: int) -> int:
        return (index % self.slots) * (self.slot_bytes + _SLOT_HEADER)

    def fits(self, pixels: np.ndarray) -> bool:
        return pixels.nbytes <= self.slot_bytes

    def write(self, index: int, pixels: np.ndarray) -> int:
        """Copy frame ``index`` into its slot; returns the slot number."""
        offset = self._offset(index)
        _STAMP.pack_into(self._buf, offset, index + 1)
        view = np.ndarray(pixels.shape, pixels.dtype, self._buf, offset + _SLOT_HEADER)
        np.copyto(view, pixels)
        _STAMP.pack_into(self._buf, offset + 8, index + 1)
        return index % self.slots

    def holds(self, index: int) -> bool:
        """Whether frame ``index`` is (still) complete in its slot."""
        return _STAMP.unpack_from(self._buf, self._offset(index) + 8)[0] == index + 1

    def read(self, index: int, shape: tuple[int, ...], dtype: str) -> np.ndarray | None:
        """A copy of frame ``index``, or None when its slot was already reused."""
        offset = self._offset(index)
        if _STAMP.unpack_from(self._buf, offset + 8)[0] != index + 1:
            return None
        view = np.ndarray(shape, np.dtype(dtype), self._buf, offset + _SLOT_HEADER)
        pixels = view.copy()
        if _STAMP.unpack_from(self._buf, offset)[0] != index + 1:
            return None
        return pixels

    def close(self) -> None:
        self._buf = None  # type: ignore[assignment]
        self._shm.close()
        if self._owner:
            self._shm.unlink()


def _reserve(shm: shared_memory.SharedMemory, size: int) -> None:
    """Allocate the segment's pages now where the system can (Linux: a tmpfs file in /dev/shm);
    on Windows and macOS there is no such call and the pages are committed as written."""
    fd = getattr(shm, "_fd", -1)  # POSIX only; no public name
    if hasattr(os, "posix_fallocate") and fd >= 0:
        os.posix_fallocate(fd, 0, size)


def _check_room(size: int) -> None:
    room = _room()
    if room is not None and size > room:
        raise ShmRingUnavailable(_no_room(size, room))


def _room() -> int | None:
    """Bytes a new segment may take: /dev/shm's free space, and no more than the memory the
    host has available (a tmpfs may be sized beyond it; its pages are RAM, and reserving more
    than is available brings the OOM killer instead of an error). None where neither is known."""
    limits = []
    if os.path.isdir(_SHM_DIR):
        limits.append(shutil.disk_usage(_SHM_DIR).free)
    available = _memory_available()
    if available is not None:
        limits.append(available)
    return min(limits) if limits else None


def _memory_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _no_room(size: int, room: int | None) -> str:
    known = f"{room / 2**20:.0f} MiB" if room is not None else "an unknown amount"
    return (
        f"the shared-memory ring needs {size / 2**20:.0f} MiB and the host has {known} free "
        f"for it ({_SHM_DIR}'s free space, at most the memory available): give {_SHM_DIR} "
        "more room (containers: --shm-size), or set fewer shm_slots (0 turns the ring off; "
        "consumers then get frames over the stream)"
    )


@dataclass(frozen=True)
class ShmFrameRef:
    """Where frame ``index`` lies in an edge's ring: a few bytes that a worker process on the
    same host turns back into the pixels (``load``), instead of the pixels themselves."""

    name: str
    slots: int
    slot_bytes: int
    index: int
    shape: tuple[int, ...]
    dtype: str

    def load(self) -> np.ndarray:
        """A copy of the frame. LookupError when the ring is not on this host or the slot was
        reused since (the reader fell more than ``slots`` frames behind)."""
        try:
            ring = _attached(self.name, self.slots, self.slot_bytes)
        except FileNotFoundError as exc:
            raise LookupError(
                f"shared-memory ring {self.name!r} does not exist on this host: frame references "
                "work only for workers on the edge's host; submit the pixels instead"
            ) from exc
        pixels = ring.read(self.index, self.shape, self.dtype)
        if pixels is None:
            raise LookupError(
                f"frame {self.index} was overwritten in the edge's {self.slots}-slot ring before "
                "the worker read it; keep fewer frames in flight or submit the pixels"
            )
        return pixels


_attached_rings: dict[str, ShmRing] = {}
_attach_lock = threading.Lock()


def _attached(name: str, slots: int, slot_bytes: int) -> ShmRing:
    with _attach_lock:
        ring = _attached_rings.get(name)
        if ring is None:
            ring = _attached_rings[name] = ShmRing.attach(name, slots, slot_bytes)
        return ring
