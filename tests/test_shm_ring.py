"""The shared-memory ring's seqlock: a reader never gets a reused or half-written slot."""

from __future__ import annotations

import numpy as np

from scopeflow import ShmRing


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
