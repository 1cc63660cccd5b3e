"""Decision logic: pure functions from analysis results to acquisition targets."""

from __future__ import annotations

from ._geometry import FrameGeometry, tile_grid
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

__all__ = [
    "Detection",
    "FrameGeometry",
    "SelectionRules",
    "detections_from_labels",
    "detections_from_objects",
    "merge_overlapping",
    "order_for_short_travel",
    "path_length_um",
    "select_targets",
    "tile_grid",
]
