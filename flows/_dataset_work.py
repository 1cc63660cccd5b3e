"""What runs on the workers of a batch flow: read a tile with its halo, run the model, write
the tile's core, record it in the ledger. One call handles a group of tiles.

Models and opened arrays are cached per worker process (a Dask worker, a Ray actor), so a
model is loaded once per worker, not once per tile or per call.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.storage import ChunkLedger, Tile

__all__ = [
    "ModelSpec",
    "RelabelContext",
    "RestoreContext",
    "SegmentContext",
    "TileDone",
    "relabel_tiles",
    "restore_tiles",
    "segment_tiles",
]

SIDES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name (or 'package.module:factory') and its options."""

    kind: Literal["segmentation", "restoration"]
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def cache_key(self) -> str:
        return json.dumps([self.kind, self.name, self.options], sort_keys=True, default=str)


@dataclass(frozen=True)
class SegmentContext:
    """Everything a worker needs for segmentation tiles, besides the tiles themselves."""

    source: str  # the input zarr array
    raw: str  # per-tile labels (local ids) in the work folder
    work: str  # ledger + seam strips
    model: ModelSpec
    pixel_size_um: float | None
    halo: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RestoreContext:
    source: str
    output: str
    work: str
    model: ModelSpec
    pixel_size_um: float | None
    out_dtype: str


@dataclass(frozen=True)
class RelabelContext:
    raw: str
    labels: str


@dataclass(frozen=True)
class TileDone:
    """A finished tile: its key, objects in its core, and where the time went."""

    key: str
    objects: int
    model_s: float
    total_s: float
    model: str
    model_version: str


_models: dict[str, Any] = {}
_arrays: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()
loads_in_process: dict[str, int] = {}


def _model(spec: ModelSpec) -> Any:
    key = spec.cache_key()
    with _lock:
        if key not in _models:
            from tasks.inference import load_model, load_restoration_model

            load = load_model if spec.kind == "segmentation" else load_restoration_model
            _models[key] = load(spec.name, **spec.options)
            loads_in_process[key] = loads_in_process.get(key, 0) + 1
        return _models[key]


def _array(url: str, mode: str = "r") -> Any:
    with _lock:
        if (url, mode) not in _arrays:
            import zarr

            _arrays[url, mode] = zarr.open_array(url, mode=mode)
        return _arrays[url, mode]


def segment_tiles(ctx: SegmentContext, tiles: list[Tile]) -> list[TileDone]:
    """Segment each tile with its halo; store the core's labels (ids 1..k for the objects in
    the core, k+1.. for halo-only ones, never written) and the seam strips; mark it done."""
    model = _model(ctx.model)
    source, raw = _array(ctx.source), _array(ctx.raw, "r+")
    ledger = ChunkLedger(Path(ctx.work))
    out = []
    for tile in tiles:
        if (recorded := ledger.record(tile.key)) is not None:
            out.append(TileDone(**recorded))  # done before: a recomputed task redoes nothing
            continue
        started = time.perf_counter()
        image = np.asarray(source[tile.read_slices()])
        t0 = time.perf_counter()
        labels = np.asarray(model.segment(image, pixel_size_um=ctx.pixel_size_um))
        model_s = time.perf_counter() - t0
        if labels.shape != image.shape:
            raise ValueError(
                f"model {ctx.model.name!r} returned labels of shape {labels.shape} for tile "
                f"{tile.key} of shape {image.shape}; labels must match the image"
            )
        labels, core_objects = _core_first(labels, tile)
        raw[tile.core_slices()] = labels[tile.core_in_read()]
        strips = _strips(labels, tile, ctx.halo, ctx.shape, core_objects)
        np.savez(Path(ctx.work) / "strips" / f"{tile.key}.npz", **strips)
        done = TileDone(
            tile.key,
            core_objects,
            model_s,
            time.perf_counter() - started,
            str(getattr(model, "name", ctx.model.name)),
            str(getattr(model, "version", "")),
        )
        ledger.mark_done(tile.key, done.__dict__)
        out.append(done)
    return out


def _core_first(labels: np.ndarray, tile: Tile) -> tuple[np.ndarray, int]:
    """Relabel to 1..k for objects with pixels in the core, k+1..n for halo-only objects."""
    core = labels[tile.core_in_read()]
    in_core = np.unique(core[core > 0])
    everywhere = np.unique(labels[labels > 0])
    halo_only = np.setdiff1d(everywhere, in_core, assume_unique=True)
    order = np.concatenate([in_core, halo_only])
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[labels], int(in_core.size)


def seam_band(tile: Tile, side: str, halo: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The band of pixels on both sides of one seam of ``tile`` (in image coordinates): core
    rows (or columns) along the seam, ``halo`` pixels either side of it."""
    height, width = shape[-2:]
    y0, y1, x0, x1 = tile.core
    if side in ("left", "right"):
        s = x0 if side == "left" else x1
        return slice(y0, y1), slice(max(0, s - halo), min(width, s + halo))
    s = y0 if side == "top" else y1
    return slice(max(0, s - halo), min(height, s + halo)), slice(x0, x1)


def has_neighbour(tile: Tile, side: str, shape: tuple[int, ...]) -> bool:
    height, width = shape[-2:]
    y0, y1, x0, x1 = tile.core
    return {"top": y0 > 0, "bottom": y1 < height, "left": x0 > 0, "right": x1 < width}[side]


def _strips(
    labels: np.ndarray, tile: Tile, halo: int, shape: tuple[int, ...], core_objects: int
) -> dict[str, np.ndarray]:
    ry0, _, rx0, _ = tile.read
    out = {}
    for side in SIDES:
        if not has_neighbour(tile, side, shape):
            continue
        ys, xs = seam_band(tile, side, halo, shape)
        band = labels[ys.start - ry0 : ys.stop - ry0, xs.start - rx0 : xs.stop - rx0]
        out[side] = np.where(band <= core_objects, band, 0).astype(np.int32)
    return out


def relabel_tiles(ctx: RelabelContext, items: list[tuple[Tile, np.ndarray]]) -> list[str]:
    """Write the final labels of each tile's core: ``lut[raw]``."""
    raw, labels = _array(ctx.raw), _array(ctx.labels, "r+")
    for tile, lut in items:
        slices = tile.core_slices()
        labels[slices] = lut[np.asarray(raw[slices])]
    return [tile.key for tile, _ in items]


def restore_tiles(ctx: RestoreContext, tiles: list[Tile]) -> list[TileDone]:
    """Restore each tile with its halo; store its core in the output image; mark it done."""
    model = _model(ctx.model)
    source, output = _array(ctx.source), _array(ctx.output, "r+")
    ledger = ChunkLedger(Path(ctx.work))
    dtype = np.dtype(ctx.out_dtype)
    out = []
    for tile in tiles:
        if (recorded := ledger.record(tile.key)) is not None:
            out.append(TileDone(**recorded))  # done before: a recomputed task redoes nothing
            continue
        started = time.perf_counter()
        image = np.asarray(source[tile.read_slices()])
        t0 = time.perf_counter()
        restored = np.asarray(model.restore(image, pixel_size_um=ctx.pixel_size_um))
        model_s = time.perf_counter() - t0
        if restored.shape != image.shape:
            raise ValueError(
                f"model {ctx.model.name!r} returned shape {restored.shape} for tile {tile.key} "
                f"of shape {image.shape}; a restored image must match its input"
            )
        core = restored[tile.core_in_read()]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            core = np.clip(np.rint(core), info.min, info.max)
        output[tile.core_slices()] = core.astype(dtype, copy=False)
        done = TileDone(
            tile.key,
            0,
            model_s,
            time.perf_counter() - started,
            str(getattr(model, "name", ctx.model.name)),
            str(getattr(model, "version", "")),
        )
        ledger.mark_done(tile.key, done.__dict__)
        out.append(done)
    return out
