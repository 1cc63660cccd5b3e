"""An OME-Zarr image with real axes (t, c, z, y, x as used), written plane by plane as frames come.

One NGFF 0.5 (zarr v3) image per field of view: the leading axes are the acquisition's own
(time, channel, z, in that order, each only when the acquisition has it), chunked one plane per
chunk so a frame is one chunk file. The store appears complete (built under a temporary name
and renamed) at the first plane; ``flush()`` then makes the metadata say what was written: the
time axis grows to the last time point seen, the channels' display windows follow the data.
Metadata files are replaced atomically and chunks are written before the shape grows, so a
reader (or a validator) sees a valid image after every flush, and between flushes the image
of the last one.

Nothing here knows useq or the edge: a caller places each frame by its axis indices. The
acquisition flow places the edge journal's frames (the journal stays the source of truth:
a store can always be rebuilt from it); a plate writer can place its fields the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scopeflow import ConfigurationError, JournalError

from ._fsutil import atomic_write_bytes, write_file
from ._ngff import (
    ChunkCodec,
    Compression,
    OmeroChannel,
    multiscale_entry,
    ngff_axis,
    omero_entry,
    zarr_compressors,
)

__all__ = [
    "AxisName",
    "ImageAxis",
    "ImageChannel",
    "ImageLayout",
    "ImageWriter",
    "axes_from_sizes",
    "channel_color",
    "channels_named",
]

AxisName = Literal["t", "c", "z"]
_ORDER: tuple[AxisName, ...] = ("t", "c", "z")
_KIND = {"t": "time", "c": "channel", "z": "space"}
_UNIT = {"t": "second", "c": None, "z": "micrometer"}

# display colours of common fluorophores and filter sets (RRGGBB); others cycle _PALETTE
_COLORS = {
    "BF": "FFFFFF",
    "DIC": "FFFFFF",
    "PHASE": "FFFFFF",
    "DAPI": "0000FF",
    "HOECHST": "0000FF",
    "BFP": "0000FF",
    "CFP": "00FFFF",
    "GFP": "00FF00",
    "FITC": "00FF00",
    "YFP": "FFFF00",
    "CY3": "FF8000",
    "TRITC": "FF8000",
    "RFP": "FF0000",
    "MCHERRY": "FF0000",
    "TXRED": "FF0000",
    "CY5": "FF00FF",
    "CY7": "800080",
}
_PALETTE = ("00FF00", "FF00FF", "00FFFF", "FF0000", "FFFF00", "0000FF", "FFFFFF")


def channel_color(name: str, index: int = 0) -> str:
    """A display colour (``RRGGBB``) for a channel: by its fluorophore or filter name when known
    (DAPI blue, FITC/GFP green, Cy5 magenta, ...), else the ``index``-th of a fixed palette."""
    key = "".join(ch for ch in name.upper() if ch.isalnum())
    for known, color in _COLORS.items():
        if key == known or key.startswith(known):
            return color
    return _PALETTE[index % len(_PALETTE)]


@dataclass(frozen=True)
class ImageAxis:
    """One leading axis: ``t`` (``scale`` in seconds), ``c`` or ``z`` (``scale`` in µm).
    ``size`` is the planned length; ``t`` is written as far as frames came."""

    name: AxisName
    size: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in _ORDER:
            raise ConfigurationError(f"axis {self.name!r}: use one of {list(_ORDER)}")
        if self.size < 1:
            raise ConfigurationError(f"axis {self.name!r} needs a size >= 1, got {self.size}")
        if not self.scale > 0:
            raise ConfigurationError(
                f"axis {self.name!r} needs a positive scale (NGFF), got {self.scale}; "
                "give 1.0 when the step is unknown"
            )


@dataclass(frozen=True)
class ImageChannel:
    """A channel's name and display colour (``RRGGBB``)."""

    label: str
    color: str


@dataclass(frozen=True)
class ImageLayout:
    """What an image holds: its leading axes (in t, c, z order), plane size, pixel type and
    size, channels (one per index of ``c``), and JSON-able ``attributes`` kept under
    ``attributes["scopeflow"]`` (provenance)."""

    name: str
    axes: tuple[ImageAxis, ...]
    plane_shape: tuple[int, int]
    dtype: str
    pixel_size_um: float
    channels: tuple[ImageChannel, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [a.name for a in self.axes]
        if names != [n for n in _ORDER if n in names]:
            raise ConfigurationError(
                f"image {self.name!r}: axes {names} must be a subset of t, c, z in that order"
            )
        size_c = next((a.size for a in self.axes if a.name == "c"), None)
        if size_c is not None and len(self.channels) != size_c:
            raise ConfigurationError(
                f"image {self.name!r}: the c axis has {size_c} channels but {len(self.channels)} "
                "are named; name every channel"
            )
        if not self.pixel_size_um > 0:
            raise ConfigurationError(
                f"image {self.name!r}: pixel size must be > 0 µm, got {self.pixel_size_um}"
            )

    @property
    def axis_names(self) -> tuple[str, ...]:
        return (*(a.name for a in self.axes), "y", "x")


class ImageWriter:
    """``writer.write({"t": 3, "c": 1, "z": 0}, plane)``; ``flush()``; ``close()``.

    The store is created at the first plane, at ``path`` (a new ``*.ome.zarr`` folder).
    Writing a plane twice overwrites it (a re-run from the journal writes the same pixels).
    """

    def __init__(
        self, path: Path, layout: ImageLayout, *, compression: Compression = "zstd"
    ) -> None:
        self.path = Path(path)
        self.layout = layout
        self.compression = compression
        self.planes = 0  # planes written (counting overwrites)
        self._index = {a.name: i for i, a in enumerate(layout.axes)}
        self._sizes = [a.size for a in layout.axes]
        self._grows = bool(layout.axes) and layout.axes[0].name == "t"
        self._extent = 0  # the time points the metadata says exist (when t grows)
        self._seen = 0
        self._low: dict[int, float] = {}
        self._high: dict[int, float] = {}
        self._array_meta: dict[str, Any] | None = None
        self._codec: ChunkCodec | None = None
        self._dirty = False

    @property
    def created(self) -> bool:
        return self._array_meta is not None

    def write(self, index: Mapping[str, int], plane: np.ndarray) -> None:
        """Place ``plane`` (y, x) at ``index`` (one entry per leading axis)."""
        pixels = np.asarray(plane)
        if pixels.shape != tuple(self.layout.plane_shape):
            raise JournalError(
                f"{self.path}: a plane of shape {pixels.shape} does not fit this image's "
                f"{tuple(self.layout.plane_shape)}; frames of another camera size or binning "
                "belong in another image"
            )
        key = self._key(index)
        if self._array_meta is None:
            self._create(pixels)
        assert self._codec is not None
        chunk = os.path.join(self.path, "0", "c", *(str(k) for k in key), "0", "0")
        os.makedirs(os.path.dirname(chunk), exist_ok=True)
        write_file(chunk, self._codec.encode(pixels))
        if self._grows:
            self._seen = max(self._seen, key[0] + 1)
        c = self._index.get("c")
        channel = key[c] if c is not None else 0
        if pixels.size:
            low, high = float(pixels.min()), float(pixels.max())
            self._low[channel] = min(low, self._low.get(channel, low))
            self._high[channel] = max(high, self._high.get(channel, high))
        self.planes += 1
        self._dirty = True

    def flush(self) -> None:
        """Make the metadata show every plane written so far (atomically, shape last)."""
        if not self._dirty or self._array_meta is None:
            return
        self._write_group()
        if self._grows and self._seen > self._extent:
            self._array_meta["shape"][0] = self._seen
            atomic_write_bytes(self.path / "0" / "zarr.json", _json_bytes(self._array_meta))
            self._extent = self._seen
        self._dirty = False

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals --------------------------------------------------------------------------------

    def _key(self, index: Mapping[str, int]) -> tuple[int, ...]:
        missing = [a.name for a in self.layout.axes if a.name not in index]
        if missing:
            raise JournalError(
                f"{self.path}: a plane needs an index on {missing} (this image's axes are "
                f"{list(self.layout.axis_names)})"
            )
        key = tuple(int(index[a.name]) for a in self.layout.axes)
        for axis, k, size in zip(self.layout.axes, key, self._sizes, strict=True):
            if k < 0 or (k >= size and not (axis.name == "t" and self._grows)):
                raise JournalError(
                    f"{self.path}: {axis.name} index {k} is outside the image's {size} "
                    f"{axis.name} planes; the acquisition produced a frame its plan did not have"
                )
        return key

    def _create(self, first: np.ndarray) -> None:
        import zarr  # deferred: ~0.3 s, only when a store is made

        layout = self.layout
        if self.path.exists():
            raise JournalError(
                f"{self.path} exists already; choose a new output folder or remove it first"
            )
        dtype = np.dtype(layout.dtype).newbyteorder("=")
        if first.dtype != dtype:
            raise JournalError(
                f"{self.path}: a plane of dtype {first.dtype} in an image of {dtype}"
            )
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.partial")
        shape = [1 if a.name == "t" and self._grows else a.size for a in layout.axes]
        shape += list(layout.plane_shape)
        try:
            tmp.mkdir(parents=True)
            zarr.create_array(
                store=str(tmp / "0"),
                shape=tuple(shape),
                chunks=(*([1] * len(layout.axes)), *layout.plane_shape),
                dtype=dtype,
                compressors=zarr_compressors(self.compression, dtype),
                filters=None,
                fill_value=0,
                dimension_names=layout.axis_names,
                zarr_format=3,
            )
            meta = json.loads((tmp / "0" / "zarr.json").read_text(encoding="utf-8"))
            self._array_meta = meta
            self._codec = ChunkCodec(meta["codecs"], dtype, tmp)
            self._extent = shape[0] if self._grows else 0
            self._write_group(tmp)
            os.replace(tmp, self.path)
        except BaseException:
            self._array_meta = None
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_group(self, root: Path | None = None) -> None:
        layout = self.layout
        px = float(layout.pixel_size_um)
        axes = [ngff_axis(a.name, _KIND[a.name], _UNIT[a.name]) for a in layout.axes]
        axes += [ngff_axis("y", "space", "micrometer"), ngff_axis("x", "space", "micrometer")]
        scale = [float(a.scale) for a in layout.axes] + [px, px]
        multiscale = multiscale_entry(
            layout.name,
            axes,
            [scale],
            description="one plane per chunk, written as frames arrive",
            method="scopeflow ImageWriter",
        )
        ome: dict[str, Any] = {"version": "0.5", "multiscales": [multiscale]}
        if layout.channels:
            ome["omero"] = omero_entry(
                [
                    OmeroChannel(ch.label, ch.color, self._low.get(i, 0.0), self._high.get(i, 1.0))
                    for i, ch in enumerate(layout.channels)
                ]
            )
        doc = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {"ome": ome, "scopeflow": dict(layout.attributes)},
        }
        atomic_write_bytes((root or self.path) / "zarr.json", _json_bytes(doc))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def axes_from_sizes(
    sizes: Mapping[str, int], scales: Mapping[str, float] | None = None
) -> tuple[ImageAxis, ...]:
    """``{"t": 10, "z": 5}`` -> the axes in NGFF order (t, c, z), with ``scales`` when given."""
    scales = scales or {}
    return tuple(
        ImageAxis(name, int(sizes[name]), float(scales.get(name, 1.0)))
        for name in _ORDER
        if name in sizes
    )


def channels_named(names: Sequence[str]) -> tuple[ImageChannel, ...]:
    """Channels with their conventional display colours."""
    return tuple(ImageChannel(n, channel_color(n, i)) for i, n in enumerate(names))
