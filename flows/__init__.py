"""Prefect flows: acquiring a useq MDASequence, targeted imaging, live tracking, batch
segmentation and restoration of datasets, offline tracking of stored movies, conversion to
OME-Zarr, OMERO registration, and the embedded demos.

The flows themselves live in their modules (``flows.targeted_imaging``, ``flows.tracking``,
``flows.segment_dataset``, ``flows.restore_dataset``, ``flows.track_dataset``,
``flows.convert``, ``flows.acquire``, ``flows.plate_screen``), which are also the
Prefect deployments' entrypoints; their parameters and the pieces other packages call are
exported here.
"""

from __future__ import annotations

from ._acquire_params import AcquireParams, AnalysisHook
from ._acquire_plan import (
    FieldPlan,
    image_events,
    load_sequence,
    normalised_event,
    plan_fields,
    shorten_sequence,
)
from ._acquire_store import FieldStores, FrameRecord
from ._dataset_params import DatasetParams, RestoreDatasetParams, SegmentDatasetParams
from ._demo import DEMO_DENSITY, DEMO_REGION, demo_params, run_demo
from ._demo_ui import DemoUI
from ._em_qc_demo import run_em_qc_demo
from ._em_qc_params import EMQCParams
from ._event_demo import run_event_demo
from ._event_params import ChannelExposure, EventTriggeredParams, FastSettings, GentleSettings
from ._event_replay import replay_event_seed
from ._event_truth import score_events_on_simulation
from ._focus import (
    AutofocusSettings,
    FocusOptics,
    autofocus_plan,
    find_focus,
    focus_analyzer,
    focus_z_limits,
    open_focus_workers,
)
from ._focus_demo import focus_demo_params, run_focus_demo
from ._focus_params import FocusTimelapseParams
from ._illumination_demo import pick_cells_by_brightness, run_illumination_demo
from ._illumination_params import AdaptiveIlluminationParams, StartLight
from ._lease_wait import LeaseWait, lease_when_free
from ._live_analysis import live_analyzer, open_backend, where_analysis_ran
from ._omero_tasks import queue_for_omero, register_in_omero
from ._optimise_demo import run_optimise_demo
from ._optimise_params import OptimiseAcquisitionParams, SettingRange
from ._plate_demo import run_plate_demo
from ._plate_params import FieldGrid, PlateScreenParams
from ._stimulate_demo import run_stimulation_demo
from ._stimulate_params import PerfusionSettings, StimulateOnEventParams, StimulationSettings
from ._targeted_params import DetailSettings, OverviewSettings, Region, TargetedImagingParams
from ._targeted_summary import RunRecord, score_targets
from ._track_params import TrackDatasetParams
from ._tracking_demo import pick_dividing_cells, run_tracking_demo
from ._tracking_params import PositionsFromOverview, TrackedPosition, TrackingParams
from ._tracking_truth import score_tracking_on_simulation
from ._uncertainty_demo import UNCERTAINTY_ACCURACY_TOLERANCE, run_uncertainty_demo
from ._uncertainty_params import ChannelSetting, UncertaintyParams
from ._uncertainty_truth import score_uncertainty_on_simulation

__all__ = [
    "DEMO_DENSITY",
    "DEMO_REGION",
    "UNCERTAINTY_ACCURACY_TOLERANCE",
    "AcquireParams",
    "AdaptiveIlluminationParams",
    "AnalysisHook",
    "AutofocusSettings",
    "ChannelExposure",
    "ChannelSetting",
    "DatasetParams",
    "DemoUI",
    "DetailSettings",
    "EMQCParams",
    "EventTriggeredParams",
    "FastSettings",
    "FieldGrid",
    "FieldPlan",
    "FieldStores",
    "FocusOptics",
    "FocusTimelapseParams",
    "FrameRecord",
    "GentleSettings",
    "LeaseWait",
    "OptimiseAcquisitionParams",
    "OverviewSettings",
    "PerfusionSettings",
    "PlateScreenParams",
    "PositionsFromOverview",
    "Region",
    "RestoreDatasetParams",
    "RunRecord",
    "SegmentDatasetParams",
    "SettingRange",
    "StartLight",
    "StimulateOnEventParams",
    "StimulationSettings",
    "TargetedImagingParams",
    "TrackDatasetParams",
    "TrackedPosition",
    "TrackingParams",
    "UncertaintyParams",
    "autofocus_plan",
    "demo_params",
    "find_focus",
    "focus_analyzer",
    "focus_demo_params",
    "focus_z_limits",
    "image_events",
    "lease_when_free",
    "live_analyzer",
    "load_sequence",
    "normalised_event",
    "open_backend",
    "open_focus_workers",
    "pick_cells_by_brightness",
    "pick_dividing_cells",
    "plan_fields",
    "queue_for_omero",
    "register_in_omero",
    "replay_event_seed",
    "run_demo",
    "run_em_qc_demo",
    "run_event_demo",
    "run_focus_demo",
    "run_illumination_demo",
    "run_optimise_demo",
    "run_plate_demo",
    "run_stimulation_demo",
    "run_tracking_demo",
    "run_uncertainty_demo",
    "score_events_on_simulation",
    "score_targets",
    "score_tracking_on_simulation",
    "score_uncertainty_on_simulation",
    "shorten_sequence",
    "where_analysis_ran",
]
