"""Tiles of a stored OME-Zarr image, and the ledger that lets a killed batch run resume.

A 2D model sees one ``(y, x)`` plane at a time: every index of the leading axes (t, c, z) is a
plane, and each plane is cut into ``tile`` x ``tile`` cores, read with ``halo`` extra pixels on
each side (clipped at the image edge). Output arrays are chunked exactly on the cores, so
workers write disjoint chunk files in parallel with no locking.

The ledger holds one small JSON file per finished tile, written (atomically) only after the
tile's output is stored. Its folder is named by a hash of everything that decides the result
(input array, model, options, tile, halo): a re-run with the same inputs skips the tiles
listed there; a different model or tiling never reuses them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopeflow import ConfigurationError

from ._fsutil import atomic_write_bytes
from ._ngff import multiscale_entry, zarr_compressors

__all__ = [
    "ChunkLedger",
    "SourceImage",
    "Tile",
    "create_image",
    "identity_hash",
    "open_image",
    "tile_grid",
]


@dataclass(frozen=True)
class SourceImage:
    """The first (full-resolution) array of an NGFF image group, and its axes and scale."""

    store: Path
    array_path: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    axes: tuple[dict[str, Any], ...]
    scale: tuple[float, ...]
    ngff_version: str

    @property
    def array_url(self) -> str:
        return str(self.store / self.array_path)

    @property
    def pixel_size_um(self) -> float | None:
        """The x pixel size when the x axis is in micrometres, else None."""
        unit = self.axes[-1].get("unit")
        return float(self.scale[-1]) if unit == "micrometer" else None


def open_image(store: Path) -> SourceImage:
    """Read an NGFF image group (0.5 zarr v3, or 0.4 zarr v2): its first dataset.

    ConfigurationError naming what is missing when ``store`` is not an image group.
    """
    import zarr

    store = Path(store)
    if not store.exists():
        raise ConfigurationError(f"{store} does not exist; give the path of an OME-Zarr image")
    group = zarr.open_group(store, mode="r")
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales")
    if not multiscales:
        raise ConfigurationError(
            f"{store} has no 'multiscales' metadata: not an OME-Zarr image (for a plate or a "
            "bioformats2raw layout, give the image group inside it, e.g. store/0)"
        )
    ms = multiscales[0]
    dataset = ms["datasets"][0]
    array = group[dataset["path"]]
    axes = tuple(
        {"name": a, "type": "space"} if isinstance(a, str) else dict(a) for a in ms["axes"]
    )
    scale = [1.0] * len(array.shape)
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(v) for v in transform["scale"]]
    if len(array.shape) < 2 or len(axes) != len(array.shape):
        raise ConfigurationError(
            f"{store}: array {dataset['path']!r} has shape {array.shape} but {len(axes)} axes; "
            "a batch flow needs at least (y, x)"
        )
    return SourceImage(
        store=store,
        array_path=str(dataset["path"]),
        shape=tuple(int(s) for s in array.shape),
        dtype=str(array.dtype),
        chunks=tuple(int(c) for c in array.chunks),
        axes=axes,
        scale=tuple(scale),
        ngff_version=str(ome.get("version", ms.get("version", "0.4"))),
    )


@dataclass(frozen=True)
class Tile:
    """One core (written) and its read window (core + halo, clipped), in one plane."""

    plane: tuple[int, ...]
    row: int
    col: int
    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    read: tuple[int, int, int, int]

    @property
    def key(self) -> str:
        plane = ".".join(str(i) for i in self.plane) or "0"
        return f"p{plane}-r{self.row}-c{self.col}"

    def core_slices(self) -> tuple[Any, ...]:
        y0, y1, x0, x1 = self.core
        return (*self.plane, slice(y0, y1), slice(x0, x1))

    def read_slices(self) -> tuple[Any, ...]:
        y0, y1, x0, x1 = self.read
        return (*self.plane, slice(y0, y1), slice(x0, x1))

    def core_in_read(self) -> tuple[slice, slice]:
        """Where the core lies inside the read window."""
        (cy0, cy1, cx0, cx1), (ry0, _, rx0, _) = self.core, self.read
        return slice(cy0 - ry0, cy1 - ry0), slice(cx0 - rx0, cx1 - rx0)


def tile_grid(shape: tuple[int, ...], tile: int, halo: int) -> list[Tile]:
    """Every tile of every plane of an array of ``shape`` (leading axes are planes)."""
    if tile < 1 or halo < 0:
        raise ConfigurationError(f"tile must be >= 1 and halo >= 0, got tile={tile} halo={halo}")
    height, width = shape[-2:]
    tiles = []
    for plane in itertools.product(*(range(n) for n in shape[:-2])):
        for row, y0 in enumerate(range(0, height, tile)):
            for col, x0 in enumerate(range(0, width, tile)):
                y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
                read = (max(0, y0 - halo), min(height, y1 + halo))
                read += (max(0, x0 - halo), min(width, x1 + halo))
                tiles.append(Tile(tuple(plane), row, col, (y0, y1, x0, x1), read))
    return tiles


def identity_hash(identity: Mapping[str, Any]) -> str:
    """A short, stable hash of what decides a result (JSON of ``identity``, keys sorted)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ChunkLedger:
    """``<folder>/done/<tile key>.json``: one record per finished tile."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.done_dir = self.folder / "done"

    def create(self, identity: Mapping[str, Any]) -> None:
        """Make the folder and record what it is for (``identity.json``)."""
        self.done_dir.mkdir(parents=True, exist_ok=True)
        path = self.folder / "identity.json"
        if not path.exists():
            text = json.dumps(dict(identity), indent=1, sort_keys=True, default=str)
            atomic_write_bytes(path, text.encode())

    def done_keys(self) -> set[str]:
        if not self.done_dir.exists():
            return set()
        return {name[:-5] for name in os.listdir(self.done_dir) if name.endswith(".json")}

    def record(self, key: str) -> dict[str, Any] | None:
        """The record of tile ``key`` if it is done, else None."""
        try:
            return json.loads((self.done_dir / f"{key}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def mark_done(self, key: str, record: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.done_dir / f"{key}.json", json.dumps(dict(record)).encode())

    def records(self) -> Iterator[dict[str, Any]]:
        for key in sorted(self.done_keys()):
            yield json.loads((self.done_dir / f"{key}.json").read_text(encoding="utf-8"))


def create_image(
    path: Path,
    like: SourceImage,
    *,
    chunks: tuple[int, ...],
    dtype: str,
    description: str,
    attributes: Mapping[str, Any],
) -> None:
    """A new, empty NGFF 0.5 image at ``path`` on ``like``'s grid (axes, shape, scale), zstd
    chunks of ``chunks``; built under a temporary name and renamed, so it appears complete."""
    import shutil

    import numpy as np
    import zarr

    name = path.name.removesuffix(".ome.zarr")
    multiscale = multiscale_entry(
        name, like.axes, [like.scale], description=description, method="scopeflow"
    )
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    group.attrs.update(
        {"ome": {"version": "0.5", "multiscales": [multiscale]}, "scopeflow": dict(attributes)}
    )
    group.create_array(
        "0",
        shape=like.shape,
        chunks=chunks,
        dtype=np.dtype(dtype),
        fill_value=0,
        compressors=zarr_compressors("zstd", np.dtype(dtype)),
        dimension_names=[a["name"] for a in like.axes],
    )
    tmp.rename(path)
