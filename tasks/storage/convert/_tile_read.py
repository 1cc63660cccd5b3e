"""One image file read whole, with where it was taken: a tile of an SEM/TEM mosaic (stage
position and pixel size from the vendor's tags: ZEISS SmartSEM/Atlas ``CZ_SEM``, Thermo
Fisher ``FEI``; OME-TIFF plane positions), for folder ingest and QC."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._formats import open_source
from ._units import to_micrometer

__all__ = ["TileImage", "read_tile"]


@dataclass(frozen=True)
class TileImage:
    """The first plane of a file's first scene, and what its metadata says about it (None:
    the file does not say)."""

    path: Path
    pixels: np.ndarray | None  # None when read without pixels
    shape: tuple[int, int]
    dtype: str
    format_name: str
    pixel_size_um: float | None
    stage_x_um: float | None
    stage_y_um: float | None
    vendor: dict[str, Any] = field(default_factory=dict)


def read_tile(path: Path, *, pixels: bool = True) -> TileImage:
    """Read ``path`` with the converters' readers (``pixels=False``: the metadata only);
    raises ``ConversionError`` (naming the file and the fix) for a file that is not a
    readable image."""
    reader = open_source(path)
    try:
        scene = reader.scenes[0]
        _, _, _, h, w = scene.shape
        data = np.asarray(reader.read(0, 0, 0, 0, slice(0, h), slice(0, w))) if pixels else None
        size = scene.physical_sizes.get("x")
        pixel_um = to_micrometer(size.value, size.unit) if size is not None else None
        vendor: dict[str, Any] = {}
        if reader.original_metadata is not None and reader.original_metadata.suffix.endswith(
            ".json"
        ):
            try:
                vendor = json.loads(reader.original_metadata.text)
            except ValueError:
                vendor = {}
        x, y = _stage_um(vendor)
        if x is None and scene.planes:
            x, y = scene.planes[0].position_x_um, scene.planes[0].position_y_um
        dtype = str(np.dtype(scene.dtype))
        return TileImage(path, data, (h, w), dtype, reader.format_name, pixel_um, x, y, vendor)
    finally:
        reader.close()


def _stage_um(vendor: dict[str, Any]) -> tuple[float | None, float | None]:
    sem = vendor.get("CZ_SEM")
    if isinstance(sem, dict):
        out = []
        for key in ("ap_stage_at_x", "ap_stage_at_y"):
            entry = sem.get(key)
            if isinstance(entry, list | tuple) and len(entry) == 3:
                out.append(to_micrometer(float(entry[1]), str(entry[2])))
            else:
                out.append(None)
        return out[0], out[1]
    fei = vendor.get("FEI")
    if isinstance(fei, dict):
        stage = fei.get("Stage") or {}
        try:
            return float(stage["StageX"]) * 1e6, float(stage["StageY"]) * 1e6
        except (KeyError, TypeError, ValueError):
            return None, None
    return None, None
