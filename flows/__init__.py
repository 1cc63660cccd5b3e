"""Prefect flows: targeted imaging, tracking, batch segmentation and restoration of datasets,
conversion to OME-Zarr, OMERO registration, and the embedded demo.

The flows themselves live in their modules (``flows.targeted_imaging``,
``flows.segment_dataset``, ``flows.restore_dataset``, ``flows.convert``), which are also the
Prefect deployments' entrypoints; their parameters and the pieces other packages call are
exported here.
"""

from __future__ import annotations

from ._dataset_params import DatasetParams, RestoreDatasetParams, SegmentDatasetParams
from ._demo import DEMO_DENSITY, DEMO_REGION, demo_params, run_demo
from ._omero_tasks import queue_for_omero, register_in_omero
from ._targeted_params import DetailSettings, OverviewSettings, Region, TargetedImagingParams
from ._targeted_summary import RunRecord, score_targets
from ._tracking_params import TrackedPosition, TrackingParams

__all__ = [
    "DEMO_DENSITY",
    "DEMO_REGION",
    "DatasetParams",
    "DetailSettings",
    "OverviewSettings",
    "Region",
    "RestoreDatasetParams",
    "RunRecord",
    "SegmentDatasetParams",
    "TargetedImagingParams",
    "TrackedPosition",
    "TrackingParams",
    "demo_params",
    "queue_for_omero",
    "register_in_omero",
    "run_demo",
    "score_targets",
]
