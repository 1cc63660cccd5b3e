"""Tiles of a multi-tile EM region as one OME-Zarr: a ``bioformats2raw.layout`` collection
(NGFF 0.5) whose images ``0``, ``1``, ... are the tiles in arrival order, each with its pixel
size and a translation to its stage position, so a viewer or a stitcher places them.

``<root>/<region>.ome.zarr/``: ``zarr.json`` (``bioformats2raw.layout``), ``OME/zarr.json``
(``series``: the image paths), ``N/`` one NGFF image (y, x) per tile with its file name and
stage position in ``scopeflow`` attributes. Writing a tile is idempotent: the same tile name
again rewrites the same image (a restarted ingest repeats no tile).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ._ngff import multiscale_entry, ngff_axis, zarr_compressors

__all__ = ["TileSetWriter"]


class TileSetWriter:
    """One OME-Zarr per region under ``root``; ``add(region, name, pixels, ...)``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._series: dict[str, list[str]] = {}

    def store(self, region: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in region) or "region"
        return self.root / f"{safe}.ome.zarr"

    def add(
        self,
        region: str,
        name: str,
        pixels: np.ndarray,
        *,
        pixel_size_um: float | None,
        stage_x_um: float | None,
        stage_y_um: float | None,
    ) -> Path:
        """Write tile ``name`` of ``region``; returns the tile's image group."""
        import zarr

        with self._lock:
            path = self.store(region)
            names = self._open(path, region)
            index = names.index(name) if name in names else len(names)
            if index == len(names):
                names.append(name)
            root = zarr.open_group(str(path), mode="a", zarr_format=3)
            ome = root.require_group("OME")
            ome.attrs["ome"] = {"version": "0.5", "series": [str(i) for i in range(len(names))]}
            ome.attrs["scopeflow"] = {"tiles": names}
        unit = "micrometer" if pixel_size_um else None
        px = float(pixel_size_um or 1.0)
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [px, px]}]
        if stage_x_um is not None and stage_y_um is not None:
            transforms.append({"type": "translation", "translation": [stage_y_um, stage_x_um]})
        multiscale = multiscale_entry(
            name,
            [ngff_axis("y", "space", unit), ngff_axis("x", "space", unit)],
            [[px, px]],
            description="one tile of an EM region, at its stage position",
            method="scopeflow TileSetWriter",
        )
        multiscale["datasets"][0]["coordinateTransformations"] = transforms
        image = zarr.open_group(str(path / str(index)), mode="w", zarr_format=3)
        image.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
        image.attrs["scopeflow"] = {
            "tile": name,
            "stage_x_um": stage_x_um,
            "stage_y_um": stage_y_um,
        }
        h, w = pixels.shape
        array = image.create_array(
            "0",
            shape=(h, w),
            chunks=(min(h, 1024), min(w, 1024)),
            dtype=pixels.dtype,
            compressors=zarr_compressors("zstd", pixels.dtype),
            dimension_names=["y", "x"],
            fill_value=0,
        )
        array[:] = pixels
        return path / str(index)

    def _open(self, path: Path, region: str) -> list[str]:
        import zarr

        names = self._series.get(region)
        if names is not None:
            return names
        if (path / "zarr.json").exists():
            group = zarr.open_group(str(path), mode="a", zarr_format=3)
            names = list(dict(group["OME"].attrs).get("scopeflow", {}).get("tiles", []))
        else:
            group = zarr.open_group(str(path), mode="w", zarr_format=3)
            group.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
            names = []
        self._series[region] = names
        return names
