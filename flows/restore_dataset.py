"""Restore (e.g. denoise) a stored OME-Zarr image on a cluster, into a new OME-Zarr image.

Same machinery as ``segment_dataset``: tiles with a halo on the workers of a compute profile,
Prefect tasks per chunk batch, a per-tile ledger keyed by input and model so that a re-run
resumes. The output holds provenance (model, version, parameters, run id) under
``attributes["scopeflow"]``.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from prefect import flow

from tasks.compute import ChunkRunner, get_profile, open_runner

from ._dataset_params import RestoreDatasetParams
from ._dataset_prefect import PrefectStages, run_id, summary_artifact
from ._dataset_restore import finish_restoration, plan_restoration
from ._dataset_run import INLINE, Stages, log, run_tiles
from ._dataset_work import restore_tiles

__all__ = ["RestoreDatasetParams", "restore_dataset", "restore_dataset_on"]


def restore_dataset_on(
    runner: ChunkRunner,
    params: RestoreDatasetParams,
    *,
    stages: Stages = INLINE,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore ``params.image`` with an open runner; returns the summary (see the flow)."""
    started = time.perf_counter()
    run = dict(run or {"run_id": uuid.uuid4().hex}, compute=runner.describe())
    plan = stages.step("plan-restoration", plan_restoration, params)
    if plan.complete:
        log().info("%s is complete for this model; nothing to do", plan.output)
        return {
            "output": str(plan.output),
            "tiles": len(plan.tiles),
            "restored": 0,
            "skipped": len(plan.tiles),
            "complete_already": True,
        }
    done = run_tiles(
        runner,
        partial(restore_tiles, plan.context),
        plan.pending,
        total=len(plan.tiles),
        tiles_per_task=params.tiles_per_task,
        stages=stages,
        ledger=plan.ledger,
        task_name="restore-chunks",
    )
    summary = stages.step("write-provenance", finish_restoration, plan, params, run)
    summary.update(
        restored=len(done),
        skipped=len(plan.tiles) - len(plan.pending),
        complete_already=False,
        seconds=round(time.perf_counter() - started, 3),
    )
    return summary


@flow(name="restore-dataset", log_prints=True)
def restore_dataset(params: RestoreDatasetParams) -> dict[str, Any]:
    """Restore every plane of a stored OME-Zarr image into a new OME-Zarr image."""
    profile = get_profile(params.profile)
    with open_runner(profile) as runner:
        summary = restore_dataset_on(
            runner,
            params,
            stages=PrefectStages(),
            run={"run_id": run_id(), "profile": params.profile},
        )
    summary_artifact(
        "restore-dataset",
        f"Restoration of {params.image.name}",
        {k: summary.get(k) for k in ("output", "tiles", "restored", "skipped", "model", "seconds")},
    )
    return summary
