"""The shared-memory ring's seqlock: a reader never gets a reused or half-written slot; a ring
the host has no room for is refused up front (the edge then streams frames inline)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import useq

from scopeflow import ShmRing, ShmRingUnavailable
from tasks.hardware import EdgeClient, EdgeProcess

SHM_DIR = "/dev/shm"


def test_a_frame_reads_back_until_its_slot_is_reused() -> None:
    ring = ShmRing.create(slots=3, slot_bytes=64 * 64 * 2)
    try:
        reader = ShmRing.attach(ring.name, ring.slots, ring.slot_bytes)
        frames = [np.full((64, 64), i, dtype=np.uint16) for i in range(5)]
        for i in range(3):
            ring.write(i, frames[i])
        np.testing.assert_array_equal(reader.read(1, (64, 64), "<u2"), frames[1])
        ring.write(3, frames[3])  # reuses frame 0's slot
        assert reader.read(0, (64, 64), "<u2") is None
        assert not reader.holds(0) and reader.holds(3)
        np.testing.assert_array_equal(reader.read(3, (64, 64), "<u2"), frames[3])
        reader.close()
    finally:
        ring.close()


def test_a_slot_being_rewritten_is_not_returned() -> None:
    ring = ShmRing.create(slots=2, slot_bytes=16)
    try:
        ring.write(0, np.arange(8, dtype=np.uint16))
        offset = 0
        ring._buf[offset : offset + 8] = (2 + 1).to_bytes(8, "little", signed=True)  # begin of #2
        assert ring.read(0, (8,), "<u2") is None
    finally:
        ring.close()


def test_frames_too_large_for_a_slot_are_not_put_in_the_ring() -> None:
    ring = ShmRing.create(slots=2, slot_bytes=16)
    try:
        assert ring.fits(np.zeros(8, np.uint16))
        assert not ring.fits(np.zeros(9, np.uint16))
    finally:
        ring.close()


def _more_than_the_host_could_ever_give() -> int:
    """Bytes beyond /dev/shm's whole size and the machine's whole memory: the refusal cannot
    depend on what other processes free meanwhile (a size just above the free space can fit a
    moment later, and reserving it would hand the machine's memory to the OOM killer)."""
    return 2 * max(
        shutil.disk_usage(SHM_DIR).total, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    )


def _segments_of_size(size: int) -> list[str]:
    return [entry.name for entry in os.scandir(SHM_DIR) if _size_of(entry) == size]


def _size_of(entry: os.DirEntry[str]) -> int | None:
    try:
        return entry.stat().st_size
    except FileNotFoundError:  # another test's segment, unlinked meanwhile
        return None


def test_a_ring_the_hosts_shared_memory_cannot_hold_is_refused_and_nothing_is_left() -> None:
    slot_bytes = _more_than_the_host_could_ever_give() // 2
    with pytest.raises(
        ShmRingUnavailable, match=r"needs \d+ MiB and the host has \d+ MiB free .*shm_slots"
    ):
        ShmRing.create(slots=2, slot_bytes=slot_bytes)
    assert _segments_of_size(2 * (slot_bytes + 16)) == []


def test_a_ring_larger_than_the_memory_available_is_refused_even_where_shm_is_larger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scopeflow import _shm_ring  # noqa: PLC2701 - stands in for a host short of memory

    monkeypatch.setattr(_shm_ring, "_memory_available", lambda: 2**20)  # a 1 MiB machine
    assert shutil.disk_usage(SHM_DIR).free > 4 * 2**20
    with pytest.raises(ShmRingUnavailable, match=r"needs 2 MiB and the host has 1 MiB free"):
        ShmRing.create(slots=2, slot_bytes=2**20)
    ShmRing.create(slots=2, slot_bytes=2**18).close()


def test_an_edge_without_room_for_its_ring_streams_the_frames_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame_bytes = 256 * 256 * 2
    slots = _more_than_the_host_could_ever_give() // frame_bytes
    monkeypatch.setenv("SCOPEFLOW_EDGE__SHM_SLOTS", str(slots))
    with (
        EdgeProcess(tmp_path / "edge", extra_args=["--camera-size", "256"]) as edge,
        EdgeClient(edge.url, token_file=edge.token_file) as client,
    ):
        client.submit_events([useq.MDAEvent(channel="DAPI", exposure=10)] * 2)
        frames = list(client.frames(0, stop=2, transport="shm", verify=True))
        assert [f.header.shm_slot for f in frames] == [None, None]  # the pixels came inline
        assert all(f.pixels.shape == (256, 256) for f in frames)
        assert any("no shared-memory ring" in line for line in edge.stderr_lines)
