"""Segment a stored OME-Zarr image on a cluster; results as an NGFF ``labels`` image.

Control plane: Prefect tasks for planning, each batch of chunks, stitching and provenance.
Data plane: the workers (Dask / Ray, chosen by compute profile) read their tiles straight from
the store and write their results there; only tile keys and counts come back.

Stitching: tiles are segmented with a halo and merged where their labels overlap in the seam
bands (IoU), see ``flows._dataset_stitch``. Resume: each finished tile is recorded in a ledger
keyed by input and model; a re-run (after a crash, a dead worker, an ended batch job) only
segments the tiles not recorded, then stitches everything.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.compute import ChunkRunner

from ._dataset_operation import run_operation, run_operation_on
from ._dataset_params import SegmentDatasetParams
from ._dataset_run import INLINE, Stages
from ._dataset_segment import SEGMENTATION

__all__ = ["SegmentDatasetParams", "segment_dataset", "segment_dataset_on"]


def segment_dataset_on(
    runner: ChunkRunner,
    params: SegmentDatasetParams,
    *,
    stages: Stages = INLINE,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment ``params.image`` with an open runner; returns the summary (see the flow)."""
    return run_operation_on(SEGMENTATION, runner, params, stages=stages, run=run)


@flow(name="segment-dataset", log_prints=True)
def segment_dataset(params: SegmentDatasetParams) -> dict[str, Any]:
    """Segment every plane of a stored OME-Zarr image into ``image/labels/<label_name>``."""
    return run_operation(SEGMENTATION, params)
