"""The overview policy of targeted imaging: acquire the tiles, collect their detections.

The loop feeds it each tile's measured objects; it maps them to stage coordinates with the
frame's pixel affine and keeps them. It commands nothing per frame (the detail acquisitions
are decided once every tile is in, by ``merge_overlapping`` / ``select_targets``), and says it
is done when every tile has been decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import useq

from scopeflow import ObjectTable

from ._geometry import FrameGeometry
from ._policy import Acquire, Command, Decision, FrameView
from ._targets import Detection, detections_from_objects

__all__ = ["OverviewPolicy", "OverviewState"]


@dataclass
class OverviewState:
    detections: list[Detection] = field(default_factory=list)
    tiles_seen: set[int] = field(default_factory=set)


class OverviewPolicy:
    """``events``: one useq event per tile, each with ``index={"p": tile}``."""

    def __init__(self, events: list[useq.MDAEvent]) -> None:
        if not events:
            raise ValueError("an overview needs at least one tile")
        self.events = tuple(events)

    def initial_state(self) -> OverviewState:
        return OverviewState()

    def first_commands(self, state: OverviewState) -> tuple[Command, ...]:
        return (Acquire("tiles", self.events),)

    def decide(
        self, state: OverviewState, frame: FrameView, result: Any
    ) -> tuple[OverviewState, Decision]:
        if not isinstance(result, ObjectTable):
            raise ValueError(f"the overview needs an ObjectTable, got {type(result).__name__}")
        tile = frame.event_index.get("p", 0)
        geometry = FrameGeometry(
            frame.stage_x_um, frame.stage_y_um, frame.width, frame.height, frame.affine
        )
        found = detections_from_objects(result, geometry, tile)
        state.detections.extend(found)
        state.tiles_seen.add(tile)
        done = len(state.tiles_seen) >= len(self.events)
        return state, Decision((), {"tile": tile, "detections": len(found)}, done=done)
