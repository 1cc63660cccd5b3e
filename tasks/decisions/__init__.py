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
from ._lap_links import two_frame_links
from ._linking import (
    LinkerSettings,
    OnlineLinker,
    Track,
    contiguous_runs,
    link_label_movie,
    link_movie,
)
from ._measure import MeasureState, SequenceMeasurePolicy
from ._overview import OverviewPolicy, OverviewState
from ._plates import (
    PlateCalibration,
    PlateField,
    calibrate_plate,
    check_plate_on_stage,
    plate_fields,
    plate_type,
    well_index,
)
from ._policy import Acquire, Command, Decision, Direct, FrameView, Policy
from ._targets import (
    Detection,
    SelectionRules,
    choose_targets,
    detections_from_labels,
    detections_from_objects,
    merge_overlapping,
    order_for_short_travel,
    path_length_um,
    select_targets,
)
from ._tracking import PositionTrack, TrackingPolicy, TrackingRules, TrackingState
from ._uncertainty_policy import (
    UncertaintyRules,
    UncertaintyState,
    UncertaintyTriggeredPolicy,
)

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
    "MeasureState",
    "OnlineLinker",
    "OverviewPolicy",
    "OverviewState",
    "PlateCalibration",
    "PlateField",
    "Policy",
    "PositionTrack",
    "RoiState",
    "RoundingDetector",
    "SelectionRules",
    "SequenceMeasurePolicy",
    "Track",
    "TrackingPolicy",
    "TrackingRules",
    "TrackingState",
    "UncertaintyRules",
    "UncertaintyState",
    "UncertaintyTriggeredPolicy",
    "calibrate_plate",
    "check_plate_on_stage",
    "choose_targets",
    "contiguous_runs",
    "detections_from_labels",
    "detections_from_objects",
    "link_label_movie",
    "link_movie",
    "merge_overlapping",
    "order_for_short_travel",
    "path_length_um",
    "plate_fields",
    "plate_type",
    "select_targets",
    "tile_grid",
    "two_frame_links",
    "well_index",
]
