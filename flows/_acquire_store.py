"""The acquisition's frames, from the edge's journal, into one OME-Zarr image per field of view.

The journal is the source of truth: on the edge's host the frames are read from it directly
(read-only, following the writer); elsewhere from the edge's stream, whose frames the edge
journaled before announcing them. Each frame goes to its field's image at its (t, c, z)
place, and is checked against the event the plan has at its place in the run (the round trip).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import CommandDone, EventFailed, Frame, JournalError
from tasks.hardware import EdgeClient, Transport
from tasks.storage import (
    Compression,
    FrameJournal,
    ImageLayout,
    ImageWriter,
    axes_from_sizes,
    channels_named,
)

from ._acquire_plan import FieldPlan, normalised_event

__all__ = ["FieldStores", "FrameRecord", "RoundTrip", "follow_journal", "follow_stream"]

_POLL_S = 0.05
_STATUS_EVERY_S = 0.25


@dataclass(frozen=True)
class FrameRecord:
    """One journaled frame of the run: its global index, journal metadata and pixels."""

    index: int
    meta: Mapping[str, Any]
    pixels: np.ndarray


def follow_journal(
    root: Path,
    *,
    start: int,
    command_id: str,
    done: Callable[[], CommandDone | None],
    stop: threading.Event,
) -> Iterator[FrameRecord | CommandDone]:
    """The command's frames from the edge's journal at ``root`` (read-only, as they are
    appended), then its ``CommandDone`` (asked with ``done()``), once every frame before it
    has been read."""
    with FrameJournal.open(root) as journal:
        nxt = start
        finished: CommandDone | None = None
        asked = 0.0
        while not stop.is_set():
            n = journal.refresh()
            for index in range(nxt, n):
                meta = journal.read_meta(index)["meta"]
                if meta.get("command_id") == command_id:
                    yield FrameRecord(index, meta, journal.read(index))
            nxt = max(nxt, n)
            if finished is not None and nxt >= finished.position:
                yield finished
                return
            if n == nxt:
                now = time.monotonic()
                if now - asked >= _STATUS_EVERY_S:
                    asked = now
                    finished = done()
                    if finished is not None:
                        continue
                time.sleep(_POLL_S)


def follow_stream(
    edge: EdgeClient, *, start: int, command_id: str, transport: Transport = "auto"
) -> Iterator[FrameRecord | CommandDone]:
    """The command's frames from the edge's stream (journaled before they were announced),
    then its ``CommandDone``."""
    for item in edge.frames(start, transport=transport, notices=True):
        if isinstance(item, Frame):
            if item.header.command_id == command_id:
                meta = item.header.model_dump(mode="json")
                yield FrameRecord(item.header.index, meta, np.array(item.pixels, copy=True))
        elif isinstance(item, CommandDone) and item.command_id == command_id:
            yield item
            return
        elif isinstance(item, EventFailed):
            continue


@dataclass
class RoundTrip:
    """Frames checked against the plan's image events, in order."""

    checked: int = 0
    mismatches: int = 0
    first_mismatches: list[dict[str, Any]] = field(default_factory=list)


class FieldStores:
    """``stores.add(record)`` for each journaled frame of the run; ``close()`` at the end."""

    def __init__(
        self,
        folder: Path,
        plans: Mapping[tuple[int, int], FieldPlan],
        expected: Sequence[dict[str, Any]],
        *,
        compression: Compression = "zstd",
        flush_every_s: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder = folder
        self.plans = plans
        self.expected = expected
        self.compression = compression
        self.flush_every_s = flush_every_s
        self.attributes = dict(attributes or {})
        self.writers: dict[tuple[int, int], ImageWriter] = {}
        self.frames = 0
        self.per_field: dict[tuple[int, int], int] = {}
        self.edge_frames: dict[tuple[int, int], list[int]] = {}
        self.round_trip = RoundTrip()
        self.flushes = 0
        self.on_flush: Callable[[FieldStores], None] | None = None
        self._last_flush = time.monotonic()

    def add(self, record: FrameRecord) -> None:
        event = record.meta["event"]
        self._check(event)
        index = event.get("index", {})
        key = (int(index.get("p", 0)), int(index.get("g", 0)))
        plan = self.plans.get(key)
        if plan is None:
            raise JournalError(
                f"journal frame {record.index} is at p={key[0]}, g={key[1]}, which the sequence "
                "has no image for; the edge ran events this flow did not send"
            )
        writer = self.writers.get(key) or self._open(plan, record)
        writer.write({a: int(index.get(a, 0)) for a in plan.sizes}, record.pixels)
        self.frames += 1
        self.per_field[key] = self.per_field.get(key, 0) + 1
        self.edge_frames.setdefault(key, []).append(record.index)
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()
        self.flushes += 1
        self._last_flush = time.monotonic()
        if self.on_flush is not None:
            self.on_flush(self)

    def close(self) -> None:
        self.flush()

    def _check(self, event: Mapping[str, Any]) -> None:
        rt = self.round_trip
        got = normalised_event(event)
        want = self.expected[rt.checked] if rt.checked < len(self.expected) else None
        if got != want:
            rt.mismatches += 1
            if len(rt.first_mismatches) < 5:
                rt.first_mismatches.append({"image": rt.checked, "planned": want, "ran": got})
        rt.checked += 1

    def _open(self, plan: FieldPlan, record: FrameRecord) -> ImageWriter:
        pixels = record.pixels
        scales = {"t": plan.t_interval_s, "z": plan.z_step_um}
        layout = ImageLayout(
            name=plan.name,
            axes=axes_from_sizes(plan.sizes, scales),
            plane_shape=(int(pixels.shape[0]), int(pixels.shape[1])),
            dtype=pixels.dtype.name,
            pixel_size_um=float(record.meta["pixel_size_um"]),
            channels=channels_named(plan.channels),
            attributes={
                **self.attributes,
                "position": {"p": plan.p, "g": plan.g, "name": plan.position_name},
                "stage_xy_um": list(plan.stage_xy_um),
                "planned_images": plan.images,
                "planned_times_s": list(plan.planned_times_s),
                "first_edge_frame": record.index,
            },
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        writer = ImageWriter(
            self.folder / f"{plan.name}.ome.zarr", layout, compression=self.compression
        )
        self.writers[plan.key] = writer
        return writer
