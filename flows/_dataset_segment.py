"""Segmentation of a stored image, step by step: plan (what is left), tiles (on the workers),
stitch (global labels, written as an NGFF ``labels`` image), provenance."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from scopeflow import ChunksFailed
from tasks.compute import ChunkRunner, group_items
from tasks.storage import (
    ChunkLedger,
    SourceImage,
    Tile,
    create_label_image,
    identity_hash,
    label_path,
    open_image,
    tile_grid,
)

from ._dataset_operation import DatasetOperation
from ._dataset_params import SegmentDatasetParams
from ._dataset_run import Stages
from ._dataset_stitch import global_luts
from ._dataset_store import plane_chunks, provenance, run_identity, stored_provenance
from ._dataset_work import (
    ModelSpec,
    RelabelContext,
    SegmentContext,
    relabel_tiles,
    segment_tiles,
)

__all__ = [
    "SEGMENTATION",
    "SegmentPlan",
    "finish_segmentation",
    "plan_segmentation",
    "stitch_labels",
]


@dataclass(frozen=True)
class SegmentPlan:
    source: SourceImage
    tiles: list[Tile]
    pending: list[Tile]
    ledger: ChunkLedger
    identity: dict[str, Any]
    key: str
    context: SegmentContext
    complete: bool


def plan_segmentation(params: SegmentDatasetParams) -> SegmentPlan:
    """Open the image, cut it into tiles, and find which tiles the ledger already holds."""
    import zarr

    source = open_image(params.image)
    tiles = tile_grid(source.shape, params.tile, params.halo)
    identity = run_identity(source, params)
    key = identity_hash(identity)
    out = label_path(source.store, params.label_name)
    existing = stored_provenance(out)
    complete = existing.get("identity") == key and existing.get("status") == "complete"
    work = params.work_dir or source.store.parent / f".{source.store.name}.scopeflow"
    ledger = ChunkLedger(work / f"labels-{params.label_name}-{key}")
    context = SegmentContext(
        source=source.array_url,
        raw=str(ledger.folder / "raw.zarr"),
        work=str(ledger.folder),
        model=ModelSpec("segmentation", params.model, dict(params.model_options)),
        pixel_size_um=params.pixel_size_um or source.pixel_size_um,
        halo=params.halo,
        shape=source.shape,
    )
    pending: list[Tile] = []
    if not complete:
        ledger.create(identity)
        (ledger.folder / "strips").mkdir(exist_ok=True)
        if not (ledger.folder / "raw.zarr").exists():
            zarr.create_array(
                store=context.raw,
                shape=source.shape,
                chunks=plane_chunks(source, params.tile),
                dtype="int32",
                fill_value=0,
                zarr_format=3,
            )
        done = ledger.done_keys()
        pending = [t for t in tiles if t.key not in done]
    return SegmentPlan(source, tiles, pending, ledger, identity, key, context, complete)


def stitch_labels(
    runner: ChunkRunner, plan: SegmentPlan, params: SegmentDatasetParams
) -> dict[str, Any]:
    """Global ids across tiles (merged at seams), written as ``labels/<name>`` by the workers."""
    records = {r["key"]: r for r in plan.ledger.records()}
    missing = [t.key for t in plan.tiles if t.key not in records]
    if missing:
        raise ChunksFailed(
            f"{len(missing)} tiles are not segmented yet (first: {missing[0]}); re-run to resume",
            failed=missing,
            done=len(records),
            total=len(plan.tiles),
        )
    luts, objects, merges = global_luts(
        plan.tiles,
        {k: int(r["objects"]) for k, r in records.items()},
        plan.ledger.folder / "strips",
        plan.source.shape,
        params.merge_iou,
    )
    source = plan.source
    create_label_image(
        source.store,
        params.label_name,
        axes=source.axes,
        scale=source.scale,
        shape=source.shape,
        chunks=plane_chunks(source, params.tile),
        dtype="uint32",
        attributes={"identity": plan.key, "status": "writing"},
    )
    context = RelabelContext(
        raw=plan.context.raw, labels=str(label_path(source.store, params.label_name) / "0")
    )
    items = [(t, luts[t.key]) for t in plan.tiles]
    outcome = runner.map(
        partial(relabel_tiles, context), group_items(items, max(1, runner.worker_count()))
    )
    if outcome.failures:
        failed = [t.key for f in outcome.failures for t, _ in f.items]
        raise ChunksFailed(
            f"writing the final labels failed for {len(failed)} tiles "
            f"({outcome.failures[0].message}); re-run to finish (segmentation is kept)",
            failed=failed,
            done=len(plan.tiles) - len(failed),
            total=len(plan.tiles),
        )
    versions = sorted({(r["model"], r["model_version"]) for r in records.values()})
    return {
        "objects": objects,
        "seam_merges": merges,
        "model_name": versions[0][0] if versions else params.model,
        "model_version": versions[0][1] if versions else "",
        "model_seconds": round(sum(float(r["model_s"]) for r in records.values()), 3),
    }


def finish_segmentation(
    plan: SegmentPlan,
    params: SegmentDatasetParams,
    stitched: dict[str, Any],
    run: dict[str, Any],
) -> dict[str, Any]:
    """Provenance into the label image's attributes (status complete); drop the ledger."""
    import zarr

    out = label_path(plan.source.store, params.label_name)
    record = provenance(
        "segmentation",
        params,
        key=plan.key,
        identity=plan.identity,
        model_name=stitched["model_name"],
        model_version=stitched["model_version"],
        run=run,
        tiles=len(plan.tiles),
        objects=stitched["objects"],
        seam_merges=stitched["seam_merges"],
    )
    zarr.open_group(out, mode="a").attrs["scopeflow"] = record
    if not params.keep_work:
        shutil.rmtree(plan.ledger.folder, ignore_errors=True)
    return {
        "labels": str(out),
        "tiles": len(plan.tiles),
        "objects": stitched["objects"],
        "seam_merges": stitched["seam_merges"],
        "model": record["model"],
        "run_id": run.get("run_id"),
        "model_seconds": stitched["model_seconds"],
    }


def label_image(params: SegmentDatasetParams) -> np.ndarray:
    """The whole label image a run wrote (for checks and small datasets)."""
    import zarr

    return np.asarray(zarr.open_array(label_path(params.image, params.label_name) / "0")[...])


def _stitch_and_record(
    runner: ChunkRunner,
    stages: Stages,
    plan: SegmentPlan,
    params: SegmentDatasetParams,
    run: dict[str, Any],
) -> dict[str, Any]:
    stitched = stages.step("stitch-labels", stitch_labels, runner, plan, params)
    return stages.step("write-provenance", finish_segmentation, plan, params, stitched, run)


def _complete_already(
    plan: SegmentPlan, params: SegmentDatasetParams
) -> tuple[str, dict[str, Any]]:
    message = f"{params.image}: labels {params.label_name!r} are complete for this model; "
    return message + "nothing to do", {
        "labels": str(plan.source.store / "labels" / params.label_name),
        "tiles": len(plan.tiles),
        "segmented": 0,
        "skipped": len(plan.tiles),
        "complete_already": True,
    }


SEGMENTATION: DatasetOperation[SegmentDatasetParams, SegmentPlan] = DatasetOperation(
    name="segmentation",
    flow_name="segment-dataset",
    chunk_task="segment-chunks",
    done_key="segmented",
    plan=plan_segmentation,
    tile_work=segment_tiles,
    finish=_stitch_and_record,
    complete_summary=_complete_already,
    artifact_keys=(
        "labels",
        "tiles",
        "segmented",
        "skipped",
        "objects",
        "seam_merges",
        "model",
        "seconds",
    ),
)
