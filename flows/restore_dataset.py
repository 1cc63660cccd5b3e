"""Restore (e.g. denoise) a stored OME-Zarr image on a cluster, into a new OME-Zarr image.

Same machinery as ``segment_dataset``: tiles with a halo on the workers of a compute profile,
Prefect tasks per chunk batch, a per-tile ledger keyed by input and model so that a re-run
resumes. The output holds provenance (model, version, parameters, run id) under
``attributes["scopeflow"]``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.compute import ChunkRunner

from ._dataset_operation import run_operation, run_operation_on
from ._dataset_params import RestoreDatasetParams
from ._dataset_restore import RESTORATION
from ._dataset_run import INLINE, Stages

__all__ = ["RestoreDatasetParams", "restore_dataset", "restore_dataset_on"]


def restore_dataset_on(
    runner: ChunkRunner,
    params: RestoreDatasetParams,
    *,
    stages: Stages = INLINE,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore ``params.image`` with an open runner; returns the summary (see the flow)."""
    return run_operation_on(RESTORATION, runner, params, stages=stages, run=run)


@flow(name="restore-dataset", log_prints=True)
def restore_dataset(params: RestoreDatasetParams) -> dict[str, Any]:
    """Restore every plane of a stored OME-Zarr image into a new OME-Zarr image."""
    return run_operation(RESTORATION, params)
