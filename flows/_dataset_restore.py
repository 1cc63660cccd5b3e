"""Restoration of a stored image into a new OME-Zarr image: plan (output store, what is left)
and provenance. Tiles are restored with a halo and only their cores are written, so no
stitching is needed."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopeflow import ConfigurationError
from tasks.compute import ChunkRunner
from tasks.storage import (
    ChunkLedger,
    SourceImage,
    Tile,
    create_image,
    identity_hash,
    open_image,
    tile_grid,
)

from ._dataset_operation import DatasetOperation
from ._dataset_params import RestoreDatasetParams
from ._dataset_run import Stages
from ._dataset_store import plane_chunks, provenance, run_identity, stored_provenance
from ._dataset_work import ModelSpec, RestoreContext, restore_tiles

__all__ = ["RESTORATION", "RestorePlan", "finish_restoration", "output_path", "plan_restoration"]


@dataclass(frozen=True)
class RestorePlan:
    source: SourceImage
    output: Path
    tiles: list[Tile]
    pending: list[Tile]
    ledger: ChunkLedger
    identity: dict[str, Any]
    key: str
    context: RestoreContext
    complete: bool


def output_path(params: RestoreDatasetParams) -> Path:
    """``params.output``, or ``<image stem>-<model>.ome.zarr`` beside the image."""
    if params.output is not None:
        return params.output
    stem = params.image.name.removesuffix(".ome.zarr").removesuffix(".zarr")
    model = params.model.rsplit(":", 1)[-1].replace(".", "-").lower()
    return params.image.with_name(f"{stem}-{model}.ome.zarr")


def plan_restoration(params: RestoreDatasetParams) -> RestorePlan:
    """Open the image; create the output store (or find it from an earlier, killed run)."""
    source = open_image(params.image)
    output = output_path(params)
    out_dtype = "float32" if params.dtype == "float32" else source.dtype
    identity = run_identity(source, params, out_dtype=out_dtype)
    key = identity_hash(identity)
    existing = stored_provenance(output)
    if output.exists() and existing.get("identity") != key:
        raise ConfigurationError(
            f"{output} exists and was not written by this restoration (other input, model or "
            "parameters); choose another --output or remove it"
        )
    complete = existing.get("status") == "complete"
    work = params.work_dir or output.parent / f".{output.name}.scopeflow"
    ledger = ChunkLedger(work / key)
    context = RestoreContext(
        source=source.array_url,
        output=str(output / "0"),
        work=str(ledger.folder),
        model=ModelSpec("restoration", params.model, dict(params.model_options)),
        pixel_size_um=params.pixel_size_um or source.pixel_size_um,
        out_dtype=out_dtype,
    )
    tiles = tile_grid(source.shape, params.tile, params.halo)
    pending: list[Tile] = []
    if not complete:
        ledger.create(identity)
        if not output.exists():
            create_image(
                output,
                source,
                chunks=plane_chunks(source, params.tile),
                dtype=out_dtype,
                description=f"{params.model} restoration of {source.store.name}",
                attributes={"identity": key, "status": "running"},
            )
        done = ledger.done_keys()
        pending = [t for t in tiles if t.key not in done]
    return RestorePlan(source, output, tiles, pending, ledger, identity, key, context, complete)


def finish_restoration(
    plan: RestorePlan, params: RestoreDatasetParams, run: dict[str, Any]
) -> dict[str, Any]:
    """Provenance into the output's attributes (status complete); drop the ledger."""
    import zarr

    records = list(plan.ledger.records())
    versions = sorted({(r["model"], r["model_version"]) for r in records})
    name, version = versions[0] if versions else (params.model, "")
    record = provenance(
        "restoration",
        params,
        key=plan.key,
        identity=plan.identity,
        model_name=name,
        model_version=version,
        run=run,
        tiles=len(plan.tiles),
    )
    zarr.open_group(plan.output, mode="a").attrs["scopeflow"] = record
    if not params.keep_work:
        shutil.rmtree(plan.ledger.folder, ignore_errors=True)
    return {
        "output": str(plan.output),
        "tiles": len(plan.tiles),
        "model": record["model"],
        "run_id": run.get("run_id"),
        "model_seconds": round(sum(float(r["model_s"]) for r in records), 3),
    }


def _record(
    runner: ChunkRunner,
    stages: Stages,
    plan: RestorePlan,
    params: RestoreDatasetParams,
    run: dict[str, Any],
) -> dict[str, Any]:
    return stages.step("write-provenance", finish_restoration, plan, params, run)


def _complete_already(
    plan: RestorePlan, params: RestoreDatasetParams
) -> tuple[str, dict[str, Any]]:
    return f"{plan.output} is complete for this model; nothing to do", {
        "output": str(plan.output),
        "tiles": len(plan.tiles),
        "restored": 0,
        "skipped": len(plan.tiles),
        "complete_already": True,
    }


RESTORATION: DatasetOperation[RestoreDatasetParams, RestorePlan] = DatasetOperation(
    name="restoration",
    flow_name="restore-dataset",
    chunk_task="restore-chunks",
    done_key="restored",
    plan=plan_restoration,
    tile_work=restore_tiles,
    finish=_record,
    complete_summary=_complete_already,
    artifact_keys=("output", "tiles", "restored", "skipped", "model", "seconds"),
)
