"""Decision logic: pure functions from analysis results to acquisition targets."""

from __future__ import annotations

from ._event_policy import (
    EventRules,
    EventState,
    EventTriggeredPolicy,
    FastProtocol,
    GentleProtocol,
    RoiState,
)
from ._events import DivisionDetector, EventDetector, EventView, RoundingDetector
from ._geometry import FrameGeometry, tile_grid
from ._linking import (
    LinkerSettings,
    OnlineLinker,
    Track,
    contiguous_runs,
    link_label_movie,
    link_movie,
)
from ._overview import OverviewPolicy, OverviewState
from ._policy import Acquire, Command, Decision, Direct, FrameView, Policy
from ._targets import (
    Detection,
    SelectionRules,
    detections_from_labels,
    detections_from_objects,
    merge_overlapping,
    order_for_short_travel,
    path_length_um,
    select_targets,
)
from ._tracking import PositionTrack, TrackingPolicy, TrackingRules, TrackingState

__all__ = [
    "Acquire",
    "Command",
    "Decision",
    "Detection",
    "Direct",
    "DivisionDetector",
    "EventDetector",
    "EventRules",
    "EventState",
    "EventTriggeredPolicy",
    "EventView",
    "FastProtocol",
    "FrameGeometry",
    "FrameView",
    "GentleProtocol",
    "LinkerSettings",
    "OnlineLinker",
    "OverviewPolicy",
    "OverviewState",
    "Policy",
    "PositionTrack",
    "RoiState",
    "RoundingDetector",
    "SelectionRules",
    "Track",
    "TrackingPolicy",
    "TrackingRules",
    "TrackingState",
    "contiguous_runs",
    "detections_from_labels",
    "detections_from_objects",
    "link_label_movie",
    "link_movie",
    "merge_overlapping",
    "order_for_short_travel",
    "path_length_um",
    "select_targets",
    "tile_grid",
]
