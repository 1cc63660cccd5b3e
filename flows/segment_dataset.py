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

import time
import uuid
from functools import partial
from typing import Any

from prefect import flow

from tasks.compute import ChunkRunner, get_profile, open_runner

from ._dataset_params import SegmentDatasetParams
from ._dataset_prefect import PrefectStages, run_id, summary_artifact
from ._dataset_run import INLINE, Stages, log, run_tiles
from ._dataset_segment import finish_segmentation, plan_segmentation, stitch_labels
from ._dataset_work import segment_tiles

__all__ = ["SegmentDatasetParams", "segment_dataset", "segment_dataset_on"]


def segment_dataset_on(
    runner: ChunkRunner,
    params: SegmentDatasetParams,
    *,
    stages: Stages = INLINE,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment ``params.image`` with an open runner; returns the summary (see the flow)."""
    started = time.perf_counter()
    run = dict(run or {"run_id": uuid.uuid4().hex}, compute=runner.describe())
    plan = stages.step("plan-segmentation", plan_segmentation, params)
    if plan.complete:
        log().info(
            "%s: labels %r are complete for this model; nothing to do",
            params.image,
            params.label_name,
        )
        return {
            "labels": str(plan.source.store / "labels" / params.label_name),
            "tiles": len(plan.tiles),
            "segmented": 0,
            "skipped": len(plan.tiles),
            "complete_already": True,
        }
    done = run_tiles(
        runner,
        partial(segment_tiles, plan.context),
        plan.pending,
        total=len(plan.tiles),
        tiles_per_task=params.tiles_per_task,
        stages=stages,
        ledger=plan.ledger,
        task_name="segment-chunks",
    )
    stitched = stages.step("stitch-labels", stitch_labels, runner, plan, params)
    summary = stages.step("write-provenance", finish_segmentation, plan, params, stitched, run)
    summary.update(
        segmented=len(done),
        skipped=len(plan.tiles) - len(plan.pending),
        complete_already=False,
        seconds=round(time.perf_counter() - started, 3),
    )
    return summary


@flow(name="segment-dataset", log_prints=True)
def segment_dataset(params: SegmentDatasetParams) -> dict[str, Any]:
    """Segment every plane of a stored OME-Zarr image into ``image/labels/<label_name>``."""
    profile = get_profile(params.profile)
    with open_runner(profile) as runner:
        summary = segment_dataset_on(
            runner,
            params,
            stages=PrefectStages(),
            run={"run_id": run_id(), "profile": params.profile},
        )
    summary_artifact(
        "segment-dataset",
        f"Segmentation of {params.image.name}",
        {
            k: summary.get(k)
            for k in (
                "labels",
                "tiles",
                "segmented",
                "skipped",
                "objects",
                "seam_merges",
                "model",
                "seconds",
            )
        },
    )
    return summary
