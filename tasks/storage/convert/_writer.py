"""Stream one 5D image into a new OME-Zarr (NGFF 0.5) image group, then build its pyramid.

The NGFF metadata and the chunk compressors are the frame journal's (``tasks.storage._ngff``), so
converted images and journaled series are written by one set of rules. Memory use is bounded by
one chunk-sized block at a time, whatever the image size.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._fsutil import write_file, write_file_with_range
from .._ngff import (
    ChunkCodec,
    Compression,
    OmeroChannel,
    multiscale_entry,
    ngff_axis,
    omero_entry,
    zarr_compressors,
)
from ._model import AXES, SceneInfo
from ._pyramid import downsample_yx, level_shapes

__all__ = ["ImageWriter", "chunk_shape"]

DEFAULT_CHUNK_YX = 1024


def chunk_shape(
    shape: tuple[int, int, int, int, int], chunks: tuple[int, ...] | None
) -> tuple[int, int, int, int, int]:
    """Chunks for a ``(t, c, z, y, x)`` image from ``(y, x)``, ``(z, y, x)`` or all five sizes.

    Default: one plane of up to 1024 x 1024 pixels per chunk. Sizes are capped at the shape.
    """
    if chunks is None:
        chunks = (DEFAULT_CHUNK_YX, DEFAULT_CHUNK_YX)
    if len(chunks) not in (2, 3, 5) or min(chunks) < 1:
        raise ValueError(
            f"chunks must be 2 (y,x), 3 (z,y,x) or 5 (t,c,z,y,x) positive sizes, got {chunks}"
        )
    full = (1,) * (5 - len(chunks)) + tuple(int(c) for c in chunks)
    t, c, z, y, x = (min(a, b) for a, b in zip(full, shape, strict=True))
    return (t, c, z, y, x)


class ImageWriter:
    """A new NGFF 0.5 image at ``path`` (a folder that must not exist) for ``scene``.

    Call :meth:`write` with blocks covering the whole image (any order, chunk-aligned), then
    :meth:`finish` to build the pyramid from level 0 and write the metadata.
    """

    def __init__(
        self,
        path: Path,
        scene: SceneInfo,
        *,
        chunks: tuple[int, ...] | None = None,
        compression: Compression = "zstd",
        max_levels: int = 8,
    ) -> None:
        import zarr  # deferred: ~0.3 s, only needed when writing

        self.path = path
        self.scene = scene
        self.chunks = chunk_shape(scene.shape, chunks)
        self.shapes = level_shapes(scene.shape, self.chunks[3:], max(1, max_levels))
        self.group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        compressors = zarr_compressors(compression, scene.dtype)
        self.arrays = [
            self.group.create_array(
                str(level),
                shape=shape,
                chunks=tuple(min(c, s) for c, s in zip(self.chunks, shape, strict=True)),
                dtype=scene.dtype,
                compressors=compressors,
                filters=None,
                fill_value=0,
                dimension_names=AXES,
            )
            for level, shape in enumerate(self.shapes)
        ]
        self._codec: ChunkCodec | None = None
        self._chunk_root = os.path.join(str(path), "0", "c")
        self._folders: set[str] = {os.path.join(str(path), "0")}
        channels = scene.shape[1]
        self._low = [math.inf] * channels
        self._high = [-math.inf] * channels

    def blocks(self) -> Iterator[tuple[int, int, slice, slice, slice]]:
        """Chunk-aligned ``(t, c, zs, ys, xs)`` blocks of level 0, in storage order."""
        t_n, c_n, z_n, y_n, x_n = self.scene.shape
        _, _, cz, cy, cx = self.chunks
        for t in range(t_n):
            for c in range(c_n):
                for z in range(0, z_n, cz):
                    for y in range(0, y_n, cy):
                        for x in range(0, x_n, cx):
                            yield (
                                t,
                                c,
                                slice(z, min(z + cz, z_n)),
                                slice(y, min(y + cy, y_n)),
                                slice(x, min(x + cx, x_n)),
                            )

    def write(self, t: int, c: int, zs: slice, ys: slice, xs: slice, block: np.ndarray) -> None:
        """Store a ``(z, y, x)`` block of level 0 (and note its range for the display window).

        A block that is exactly one chunk is encoded and written as one file by the journal's
        chunk codec (no read-modify-write); any other block goes through zarr.
        """
        _, _, cz, cy, cx = self.chunks
        if block.shape == (cz, cy, cx) and not (zs.start % cz or ys.start % cy or xs.start % cx):
            key = (t, c, zs.start // cz, ys.start // cy, xs.start // cx)
            low, high = self._write_chunk(key, block)
        elif block.size:
            low, high = float(block.min()), float(block.max())
            self.arrays[0][t, c, zs, ys, xs] = block
        else:
            return
        self._low[c] = min(self._low[c], low)
        self._high[c] = max(self._high[c], high)

    def _write_chunk(self, key: tuple[int, ...], block: np.ndarray) -> tuple[float, float]:
        """Write one whole chunk file; return the block's (min, max)."""
        if self._codec is None:
            meta = json.loads((self.path / "0" / "zarr.json").read_text(encoding="utf-8"))
            self._codec = ChunkCodec(meta["codecs"], self.scene.dtype, self.path / "0")
        folder = os.path.join(self._chunk_root, *(str(k) for k in key[:-1]))
        if folder not in self._folders:
            _make_folders(folder, self._folders)
        path = os.path.join(folder, str(key[-1]))
        if self._codec.compressed:  # compression dominates: two plain passes for the range
            write_file(path, self._codec.encode(block))
            return float(block.min()), float(block.max())
        return write_file_with_range(path, self._codec.as_stored(block))

    def finish(self, attributes: Mapping[str, Any] | None = None) -> None:
        """Build levels 1.. from the level above, chunk by chunk, and write the NGFF metadata."""
        for level in range(1, len(self.arrays)):
            self._downsample_into(level)
        ome: dict[str, Any] = {
            "version": "0.5",
            "multiscales": [self._multiscale()],
            "omero": omero_entry(
                [
                    OmeroChannel(ch.name, ch.color, *self._window(i))
                    for i, ch in enumerate(self.scene.channels)
                ]
            ),
        }
        self.group.attrs.update({"ome": ome, "scopeflow": dict(attributes or {})})

    def _window(self, channel: int) -> tuple[float, float]:
        low, high = self._low[channel], self._high[channel]
        return (0.0, 1.0) if math.isinf(low) else (low, high)

    def _downsample_into(self, level: int) -> None:
        source, target = self.arrays[level - 1], self.arrays[level]
        t_n, c_n, z_n, y_n, x_n = target.shape
        _, _, cz, cy, cx = target.chunks
        for t in range(t_n):
            for c in range(c_n):
                for z in range(0, z_n, cz):
                    zs = slice(z, min(z + cz, z_n))
                    for y in range(0, y_n, cy):
                        for x in range(0, x_n, cx):
                            y1, x1 = min(y + cy, y_n), min(x + cx, x_n)
                            block = source[t, c, zs, 2 * y : 2 * y1, 2 * x : 2 * x1]
                            small = downsample_yx(np.asarray(block))
                            target[t, c, zs, y:y1, x:x1] = small[..., : y1 - y, : x1 - x]

    def _multiscale(self) -> dict[str, Any]:
        sizes = self.scene.physical_sizes
        units = {axis: sizes[axis].unit if axis in sizes else None for axis in ("t", "z", "y", "x")}
        axes = [
            ngff_axis("t", "time", units["t"]),
            ngff_axis("c", "channel"),
            ngff_axis("z", "space", units["z"]),
            ngff_axis("y", "space", units["y"]),
            ngff_axis("x", "space", units["x"]),
        ]
        base = [sizes[a].value if a in sizes else 1.0 for a in ("t", "z", "y", "x")]
        scales = []
        for shape in self.shapes:
            fy, fx = self.shapes[0][3] / shape[3], self.shapes[0][4] / shape[4]
            fy, fx = 2 ** round(math.log2(fy)), 2 ** round(math.log2(fx))
            scales.append([base[0], 1.0, base[1], base[2] * fy, base[3] * fx])
        return multiscale_entry(
            self.scene.name,
            axes,
            scales,
            description="converted by scopeflow; levels are 2x2 means of the level above",
            method="scopeflow.convert",
            downscaling="mean",
        )


def _make_folders(folder: str, made: set[str]) -> None:
    """``os.makedirs`` for chunk folders, remembering what exists (no ``stat`` per chunk)."""
    parent = os.path.dirname(folder)
    if parent not in made and parent != folder:
        _make_folders(parent, made)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder)
    made.add(folder)
