"""Segmentation of a stored image, step by step: plan (what is left), tiles (on the workers),
stitch (global labels, written as an NGFF ``labels`` image), provenance."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
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

from ._dataset_params import SegmentDatasetParams
from ._dataset_stitch import global_luts
from ._dataset_work import ModelSpec, RelabelContext, SegmentContext, relabel_tiles

__all__ = ["SegmentPlan", "finish_segmentation", "plan_segmentation", "stitch_labels"]


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


def _chunks(source: SourceImage, tile: int) -> tuple[int, ...]:
    height, width = source.shape[-2:]
    return (*(1 for _ in source.shape[:-2]), min(tile, height), min(tile, width))


def _existing_identity(labels: Path) -> dict[str, Any]:
    meta = labels / "zarr.json"
    if not meta.exists():
        return {}
    attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes", {})
    prov: dict[str, Any] = attrs.get("scopeflow", {})
    return prov


def plan_segmentation(params: SegmentDatasetParams) -> SegmentPlan:
    """Open the image, cut it into tiles, and find which tiles the ledger already holds."""
    import zarr

    source = open_image(params.image)
    tiles = tile_grid(source.shape, params.tile, params.halo)
    identity = {
        "source": str(source.store.resolve()),
        "array": source.array_path,
        "shape": list(source.shape),
        "dtype": source.dtype,
        "model": params.model,
        "model_options": params.model_options,
        "tile": params.tile,
        "halo": params.halo,
        "pixel_size_um": params.pixel_size_um or source.pixel_size_um,
    }
    key = identity_hash(identity)
    out = label_path(source.store, params.label_name)
    existing = _existing_identity(out)
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
                chunks=_chunks(source, params.tile),
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
        chunks=_chunks(source, params.tile),
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
    provenance = {
        "identity": plan.key,
        "status": "complete",
        "kind": "segmentation",
        "model": {
            "spec": params.model,
            "name": stitched["model_name"],
            "version": stitched["model_version"],
            "options": params.model_options,
        },
        "parameters": params.model_dump(mode="json"),
        "run": run,
        "source": plan.identity["source"],
        "tiles": len(plan.tiles),
        "objects": stitched["objects"],
        "seam_merges": stitched["seam_merges"],
        "finished": datetime.now(UTC).isoformat(),
    }
    zarr.open_group(out, mode="a").attrs["scopeflow"] = provenance
    if not params.keep_work:
        shutil.rmtree(plan.ledger.folder, ignore_errors=True)
    return {
        "labels": str(out),
        "tiles": len(plan.tiles),
        "objects": stitched["objects"],
        "seam_merges": stitched["seam_merges"],
        "model": provenance["model"],
        "run_id": run.get("run_id"),
        "model_seconds": stitched["model_seconds"],
    }


def label_image(params: SegmentDatasetParams) -> np.ndarray:
    """The whole label image a run wrote (for checks and small datasets)."""
    import zarr

    return np.asarray(zarr.open_array(label_path(params.image, params.label_name) / "0")[...])
