"""What both batch operations record in the stores they write: chunking by plane, the identity
of a run's inputs (which keys its ledger and marks its output), and the provenance written
when the output is complete."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.storage import SourceImage

from ._dataset_params import RestoreDatasetParams, SegmentDatasetParams

__all__ = ["plane_chunks", "provenance", "run_identity", "stored_provenance"]

OperationParams = SegmentDatasetParams | RestoreDatasetParams


def plane_chunks(source: SourceImage, tile: int) -> tuple[int, ...]:
    """One plane per chunk, tiles of at most ``tile`` pixels within it."""
    height, width = source.shape[-2:]
    return (*(1 for _ in source.shape[:-2]), min(tile, height), min(tile, width))


def run_identity(source: SourceImage, params: OperationParams, **extra: Any) -> dict[str, Any]:
    """Everything a run's output depends on: the source array, the model and the tiling
    (``extra``: what the operation adds, before the pixel size)."""
    return {
        "source": str(source.store.resolve()),
        "array": source.array_path,
        "shape": list(source.shape),
        "dtype": source.dtype,
        "model": params.model,
        "model_options": params.model_options,
        "tile": params.tile,
        "halo": params.halo,
        **extra,
        "pixel_size_um": params.pixel_size_um or source.pixel_size_um,
    }


def stored_provenance(store: Path) -> dict[str, Any]:
    """The ``scopeflow`` attributes of an output written earlier ({} when there is none)."""
    meta = store / "zarr.json"
    if not meta.exists():
        return {}
    prov: dict[str, Any] = (
        json.loads(meta.read_text(encoding="utf-8")).get("attributes", {}).get("scopeflow", {})
    )
    return prov


def provenance(
    kind: str,
    params: OperationParams,
    *,
    key: str,
    identity: dict[str, Any],
    model_name: str,
    model_version: str,
    run: dict[str, Any],
    tiles: int,
    **extra: Any,
) -> dict[str, Any]:
    """The record written into a complete output's attributes (``extra``: the operation's own
    counts, before the finishing time)."""
    return {
        "identity": key,
        "status": "complete",
        "kind": kind,
        "model": {
            "spec": params.model,
            "name": model_name,
            "version": model_version,
            "options": params.model_options,
        },
        "parameters": params.model_dump(mode="json"),
        "run": run,
        "source": identity["source"],
        "tiles": tiles,
        **extra,
        "finished": datetime.now(UTC).isoformat(),
    }
