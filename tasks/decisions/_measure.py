"""A policy that acquires a whole planned sequence and measures what the workers found.

The acquisition flow's analysis hooks: the plan is the user's (an MDASequence's events, sent
once as one command), so nothing is decided from the results; each analysed frame's objects
are summarised (count, mean area, mean intensity) per field of view into the decision log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import useq

from scopeflow import ObjectTable

from ._policy import Acquire, Command, Decision, FrameView

__all__ = ["MeasureState", "SequenceMeasurePolicy"]


@dataclass(frozen=True)
class MeasureState:
    """Per field of view ``"p.g"``: frames analysed and objects found."""

    frames: dict[str, int] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)


class SequenceMeasurePolicy:
    """``first_commands``: the sequence's events as one acquisition (``key`` names it);
    ``decide``: the frame's measurements, no command."""

    def __init__(self, events: Sequence[useq.MDAEvent], *, key: str = "sequence") -> None:
        if not events:
            raise ValueError("a sequence with no events has nothing to acquire")
        self._events = tuple(events)
        self._key = key

    def initial_state(self) -> MeasureState:
        return MeasureState()

    def first_commands(self, state: MeasureState) -> tuple[Command, ...]:
        return (Acquire(self._key, self._events),)

    def decide(
        self, state: MeasureState, frame: FrameView, result: Any
    ) -> tuple[MeasureState, Decision]:
        if not isinstance(result, ObjectTable):
            raise ValueError(f"frame {frame.index}: expected measured objects, got {result!r}")
        index = frame.event_index
        where = f"{index.get('p', 0)}.{index.get('g', 0)}"
        px2 = frame.pixel_size_um**2
        summary = {
            "field": where,
            "index": dict(index),
            "objects": len(result),
            "mean_area_um2": round(float(np.mean(result.area_px)) * px2, 3) if len(result) else 0,
            "mean_intensity": round(float(np.mean(result.mean_intensity)), 2) if len(result) else 0,
        }
        state = MeasureState(
            frames={**state.frames, where: state.frames.get(where, 0) + 1},
            objects={**state.objects, where: state.objects.get(where, 0) + len(result)},
        )
        return state, Decision(summary=summary)
