"""Nikon ND2 and Leica LIF through bioio and its format plugins (optional dependencies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConversionError

from ._model import ChannelInfo, PhysicalSize, SceneInfo, default_channels

__all__ = ["BioioReader"]

_PLUGINS = {".nd2": "bioio-nd2", ".lif": "bioio-lif"}


class BioioReader:
    """A file bioio can open (ND2, LIF), read one plane region at a time through dask."""

    def __init__(self, path: Path) -> None:
        plugin = _PLUGINS.get(path.suffix.lower(), "the bioio plugin for this format")
        try:
            from bioio import BioImage
        except ImportError as exc:
            raise ConversionError(
                f"{path}: converting {path.suffix} files needs bioio and {plugin}; install them "
                f"with: pip install bioio {plugin}"
            ) from exc
        self.path = path
        self.format_name = path.suffix.lstrip(".").upper()
        self.original_metadata = None
        try:
            self._image: Any = BioImage(str(path))
            self.scenes = tuple(self._scene(i, s) for i, s in enumerate(self._image.scenes))
        except ConversionError:
            raise
        except Exception as exc:  # bioio plugins raise their own types for damaged files
            raise ConversionError(
                f"{path}: bioio cannot read this file ({exc!r}); check that {plugin} is installed "
                "and that the file is complete"
            ) from exc

    def _scene(self, index: int, name: str) -> SceneInfo:
        image = self._image
        image.set_scene(index)
        t, c, z, y, x = (int(v) for v in image.dims.shape[:5])
        sizes: dict[str, PhysicalSize] = {}
        pps = image.physical_pixel_sizes
        for axis, value in (("z", pps.Z), ("y", pps.Y), ("x", pps.X)):
            if value:
                sizes[axis] = PhysicalSize(float(value), "micrometer")
        names = [str(n) for n in (image.channel_names or [])]
        channels = (
            tuple(ChannelInfo(n, d.color) for n, d in zip(names, default_channels(c), strict=True))
            if len(names) == c
            else default_channels(c)
        )
        return SceneInfo(
            name=str(name),
            shape=(t, c, z, y, x),
            dtype=np.dtype(image.dtype),
            channels=channels,
            physical_sizes=sizes,
        )

    def read(self, scene: int, t: int, c: int, z: int, ys: slice, xs: slice) -> np.ndarray:
        self._image.set_scene(scene)
        plane = self._image.get_image_dask_data("YX", T=t, C=c, Z=z)
        return np.asarray(plane[ys, xs].compute())

    def close(self) -> None:
        close = getattr(self._image, "close", None) if hasattr(self, "_image") else None
        if close is not None:
            close()
