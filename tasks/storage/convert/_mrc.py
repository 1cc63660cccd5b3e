"""MRC (cryo-EM / TEM volumes, tilt series and image stacks) through mrcfile, memory-mapped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConversionError

from ._model import OriginalMetadata, PhysicalSize, SceneInfo, default_channels

__all__ = ["MrcReader"]


class MrcReader:
    """An MRC file opened for conversion (see :class:`SourceReader`); z is the section axis."""

    format_name = "MRC"

    def __init__(self, path: Path) -> None:
        import mrcfile

        self.path = path
        try:
            self._mrc = mrcfile.mmap(str(path), mode="r", permissive=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ConversionError(
                f"{path}: not a readable MRC file ({exc}); the file is truncated or corrupt, "
                "copy it again from the acquisition computer"
            ) from exc
        data = self._mrc.data
        if data is None or data.ndim not in (2, 3):
            self.close()
            raise ConversionError(
                f"{path}: the MRC holds no 2D image or 3D volume (volume stacks are not "
                "supported); split it into one MRC per volume"
            )
        self._data = data if data.ndim == 3 else data[None]
        z, y, x = self._data.shape
        voxel = self._mrc.voxel_size  # angstrom
        sizes: dict[str, PhysicalSize] = {}
        for axis in ("x", "y", "z"):
            value = float(getattr(voxel, axis))
            if value > 0:
                sizes[axis] = PhysicalSize(value / 10.0, "nanometer")
        if self._mrc.is_image_stack():
            sizes.pop("z", None)  # images of different particles/frames: no z spacing
        self.scenes = (
            SceneInfo(
                name=path.name.split(".")[0],
                shape=(1, 1, z, y, x),
                dtype=np.dtype(self._data.dtype).newbyteorder("="),
                channels=default_channels(1),
                physical_sizes=sizes,
            ),
        )
        self.original_metadata = OriginalMetadata("mrc.json", json.dumps(self._header(), indent=1))

    def _header(self) -> dict[str, Any]:
        header = self._mrc.header
        out: dict[str, Any] = {
            name: header[name].tolist() for name in header.dtype.names if name != "label"
        }
        out["exttyp"] = bytes(header.exttyp).decode("ascii", "replace")
        out["map"] = bytes(header.map).decode("ascii", "replace")
        out["machst"] = bytes(header.machst).hex()
        out["labels"] = [
            bytes(label).decode("ascii", "replace").strip()
            for label in header.label[: int(header.nlabl)]
        ]
        return {k: v for k, v in out.items() if not isinstance(v, bytes)}

    def read(self, scene: int, t: int, c: int, z: int, ys: slice, xs: slice) -> np.ndarray:
        try:
            return np.array(self._data[z, ys, xs], dtype=self.scenes[0].dtype)
        except (OSError, ValueError) as exc:
            raise ConversionError(f"{self.path}: section {z} cannot be read ({exc})") from exc

    def close(self) -> None:
        self._mrc.close()
