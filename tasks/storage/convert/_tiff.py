"""TIFF through tifffile: OME-TIFF (incl. Micro-Manager), SEM/TEM TIFF with vendor pixel sizes.

Regions are read lazily through tifffile's zarr view of each series, so tiled or striped
planes larger than memory are read piece by piece.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConversionError

from ._model import ChannelInfo, OriginalMetadata, PhysicalSize, SceneInfo, default_channels
from ._ome_xml import ome_scenes
from ._vendor_tiff import vendor_pixel_size

__all__ = ["TiffReader"]

_TCZ = ("T", "C", "Z")
_READ_ERRORS = (ValueError, OSError, struct.error, IndexError, KeyError, EOFError)


class TiffReader:
    """A TIFF opened for conversion (see :class:`SourceReader`)."""

    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = path
        try:
            self._tiff = tifffile.TiffFile(str(path))
        except (tifffile.TiffFileError, *_READ_ERRORS) as exc:
            raise ConversionError(
                f"{path}: not a readable TIFF ({exc}); the file is truncated or corrupt, copy it "
                "again from the acquisition computer"
            ) from exc
        try:
            self._open_series()
        except ConversionError:
            self.close()
            raise
        except (tifffile.TiffFileError, *_READ_ERRORS) as exc:
            self.close()
            raise ConversionError(
                f"{path}: the TIFF structure cannot be read ({exc}); the file is truncated or "
                "corrupt, copy it again from the acquisition computer"
            ) from exc

    def _open_series(self) -> None:
        tif = self._tiff
        series = [s for s in tif.series if not getattr(s, "is_multifile_missing", False)]
        if not series:
            raise ConversionError(f"{self.path}: the TIFF holds no image")
        self._series = series
        self._axis_maps = [self._axis_map(s.axes, s.shape) for s in series]
        self._arrays: dict[int, Any] = {}
        ome = tif.ome_metadata if tif.is_ome else None
        if ome:
            self.format_name = "Micro-Manager OME-TIFF" if tif.is_micromanager else "OME-TIFF"
            self.original_metadata: OriginalMetadata | None = OriginalMetadata("ome.xml", ome)
            meta = ome_scenes(ome)
        else:
            vendor, pixel, document = vendor_pixel_size(tif)
            self.format_name = f"{vendor} TIFF" if vendor else "TIFF"
            self.original_metadata = (
                OriginalMetadata("tiff.json", json.dumps(document, default=str, indent=1))
                if document
                else None
            )
            meta = [{"physical_sizes": pixel} for _ in series]
        self.scenes = tuple(
            self._scene(i, s, meta[i] if i < len(meta) else {}) for i, s in enumerate(series)
        )

    def _axis_map(self, axes: str, shape: tuple[int, ...]) -> dict[str, str]:
        """Which tifffile axis holds t, c, z ('S' samples become channels when C is absent)."""
        mapping: dict[str, str] = {}
        for axis, size in zip(axes, shape, strict=True):
            if axis in _TCZ or axis in "YX":
                mapping[axis] = axis
            elif axis == "S" and "C" not in axes:
                mapping["C"] = "S"
            elif axis in "IQ" and size > 1 and "T" not in axes and "T" not in mapping:
                mapping["T"] = axis  # an unlabelled page sequence: time
            elif size > 1:
                raise ConversionError(
                    f"{self.path}: TIFF axis {axis!r} of size {size} (axes {axes}) has no OME-Zarr "
                    "equivalent; save the data as OME-TIFF with T/C/Z axes"
                )
        if "Y" not in mapping or "X" not in mapping:
            raise ConversionError(f"{self.path}: the TIFF series has no Y/X plane (axes {axes})")
        return mapping

    def _scene(self, index: int, series: Any, meta: dict[str, Any]) -> SceneInfo:
        sizes = dict(zip(series.axes, series.shape, strict=True))
        mapping = self._axis_maps[index]
        t, c, z = (sizes[mapping[a]] if a in mapping else 1 for a in _TCZ)
        channels: tuple[ChannelInfo, ...] = tuple(meta.get("channels") or ())
        if len(channels) != c:
            channels = default_channels(c)
        physical: dict[str, PhysicalSize] = meta.get("physical_sizes") or {}
        name = meta.get("name") or series.name or self.path.name.split(".")[0]
        return SceneInfo(
            name=str(name),
            shape=(t, c, z, sizes["Y"], sizes["X"]),
            dtype=np.dtype(series.dtype),
            channels=channels,
            physical_sizes=physical,
            planes=tuple(meta.get("planes") or ()),
            acquired=meta.get("acquired"),
        )

    def close(self) -> None:
        self._arrays.clear()
        self._tiff.close()

    def read(self, scene: int, t: int, c: int, z: int, ys: slice, xs: slice) -> np.ndarray:
        array = self._array(scene)
        series, mapping = self._series[scene], self._axis_maps[scene]
        where = {"T": t, "C": c, "Z": z}
        source_index = {mapping[a]: where[a] for a in _TCZ if a in mapping}
        index: list[int | slice] = []
        for axis in series.axes:
            if axis == "Y":
                index.append(ys)
            elif axis == "X":
                index.append(xs)
            else:
                index.append(source_index.get(axis, 0))
        try:
            return np.asarray(array[tuple(index)])
        except Exception as exc:  # tifffile/imagecodecs raise many types on damaged strips
            raise ConversionError(
                f"{self.path}: plane t={t} c={c} z={z} cannot be read ({exc!r}); the file is "
                "truncated or corrupt"
            ) from exc

    def _array(self, scene: int) -> Any:
        array = self._arrays.get(scene)
        if array is None:
            import zarr

            store = self._series[scene].aszarr(level=0)
            array = zarr.open_array(store, mode="r")
            self._arrays[scene] = array
        return array
