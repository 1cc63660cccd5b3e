"""Decision logic: pure functions from analysis results to acquisition targets."""

from __future__ import annotations

from ._acquisition_search import (
    AcquisitionSettings,
    GridSuggester,
    ParameterSearchPolicy,
    SearchObjective,
    SearchSpace,
    SearchState,
    Suggester,
    Trial,
)
from ._autofocus import AutofocusPlan, AutofocusPolicy, AutofocusState, PositionFocus
from ._carry_forward import ModelChange, carry_forward, match_points, model_change
from ._event_policy import (
    EventRules,
    EventState,
    EventTriggeredPolicy,
    FastProtocol,
    GentleProtocol,
    RoiState,
)
from ._events import (
    AlwaysDetector,
    DivisionDetector,
    EventDetector,
    EventView,
    RoundingDetector,
)
from ._focus_search import (
    FocusResult,
    FocusRules,
    FocusSearch,
    FocusSweep,
    depth_of_field_um,
    fit_focus_peak,
)
from ._focused_tracking import FocusedTrackingPolicy, FocusedTrackingState, RefocusRules
from ._geometry import FrameGeometry, tile_grid
from ._illumination import (
    AdaptiveIlluminationPolicy,
    IlluminationRules,
    IlluminationState,
    LightSetting,
    PositionLight,
)
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
from ._optuna_suggester import OptunaSuggester, SamplerKind, default_startup
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
from ._stimulate_policy import StimulateOnEventPolicy, StimulationPlan, StimulationState
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
    CARRY_FORWARD_MAX_RUN,
    CARRY_FORWARD_THRESHOLD,
    UncertaintyRules,
    UncertaintyState,
    UncertaintyTriggeredPolicy,
)

__all__ = [
    "CARRY_FORWARD_MAX_RUN",
    "CARRY_FORWARD_THRESHOLD",
    "Acquire",
    "AcquisitionSettings",
    "AdaptiveIlluminationPolicy",
    "AlwaysDetector",
    "AutofocusPlan",
    "AutofocusPolicy",
    "AutofocusState",
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
    "FocusResult",
    "FocusRules",
    "FocusSearch",
    "FocusSweep",
    "FocusedTrackingPolicy",
    "FocusedTrackingState",
    "FrameGeometry",
    "FrameView",
    "GentleProtocol",
    "GridSuggester",
    "IlluminationRules",
    "IlluminationState",
    "LightSetting",
    "LinkerSettings",
    "MeasureState",
    "ModelChange",
    "OnlineLinker",
    "OptunaSuggester",
    "OverviewPolicy",
    "OverviewState",
    "ParameterSearchPolicy",
    "PlateCalibration",
    "PlateField",
    "Policy",
    "PositionFocus",
    "PositionLight",
    "PositionTrack",
    "RefocusRules",
    "RoiState",
    "RoundingDetector",
    "SamplerKind",
    "SearchObjective",
    "SearchSpace",
    "SearchState",
    "SelectionRules",
    "SequenceMeasurePolicy",
    "StimulateOnEventPolicy",
    "StimulationPlan",
    "StimulationState",
    "Suggester",
    "Track",
    "TrackingPolicy",
    "TrackingRules",
    "TrackingState",
    "Trial",
    "UncertaintyRules",
    "UncertaintyState",
    "UncertaintyTriggeredPolicy",
    "calibrate_plate",
    "carry_forward",
    "check_plate_on_stage",
    "choose_targets",
    "contiguous_runs",
    "default_startup",
    "depth_of_field_um",
    "detections_from_labels",
    "detections_from_objects",
    "fit_focus_peak",
    "link_label_movie",
    "link_movie",
    "match_points",
    "merge_overlapping",
    "model_change",
    "order_for_short_travel",
    "path_length_um",
    "plate_fields",
    "plate_type",
    "select_targets",
    "tile_grid",
    "two_frame_links",
    "well_index",
]
