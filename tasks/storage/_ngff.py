"""One OME-Zarr (NGFF 0.5, zarr v3) image store per series: metadata and chunk codecs.

Each series store holds one multiscale image with one dataset ``"0"``: a ``(t, y, x)`` array
chunked one frame per chunk, so appending a frame is writing one chunk file and growing the
shape. The array metadata is produced once by zarr-python itself (so that zarr reads back
exactly what it would have written); later appends only change ``shape[0]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scopeflow import JournalError

__all__ = [
    "COMPRESSIONS",
    "ChunkCodec",
    "Compression",
    "OmeroChannel",
    "array_metadata_template",
    "chunk_path",
    "group_metadata",
    "multiscale_entry",
    "ngff_axis",
    "omero_entry",
    "warm_up",
    "zarr_compressors",
]

Compression = Literal["none", "zstd", "lz4"]
COMPRESSIONS: tuple[str, ...] = ("none", "zstd", "lz4")
ZSTD_LEVEL = 1  # fast enough to keep up with a camera; ~2x on typical microscopy frames
LZ4_CLEVEL = 5


def warm_up() -> None:
    """Import zarr and numcodecs now (~0.5 s), not in the middle of the first append of a run."""
    import numcodecs  # noqa: F401
    import zarr  # noqa: F401


def ngff_axis(name: str, kind: str, unit: str | None = None) -> dict[str, str]:
    """One NGFF axis entry; ``kind`` is ``space``, ``time`` or ``channel``."""
    axis = {"name": name, "type": kind}
    if unit is not None:
        axis["unit"] = unit
    return axis


def multiscale_entry(
    name: str,
    axes: Sequence[Mapping[str, str]],
    level_scales: Sequence[Sequence[float]],
    *,
    description: str,
    method: str,
    downscaling: str = "none",
) -> dict[str, Any]:
    """One NGFF 0.5 ``multiscales`` item: datasets ``"0"``, ``"1"``, ... with their scales."""
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": [float(v) for v in scale]}],
        }
        for level, scale in enumerate(level_scales)
    ]
    return {
        "name": name,
        "axes": [dict(a) for a in axes],
        "datasets": datasets,
        "type": downscaling,
        "metadata": {"description": description, "method": method},
    }


@dataclass(frozen=True)
class OmeroChannel:
    """One channel of an ``omero`` block: label, ``RRGGBB`` colour and display window."""

    label: str
    color: str
    low: float
    high: float


def omero_entry(channels: Sequence[OmeroChannel]) -> dict[str, Any]:
    """The ``omero`` rendering block (channel names, colours, windows) of an NGFF 0.5 image."""
    return {
        "version": "0.5",
        "channels": [
            {
                "label": ch.label,
                "color": ch.color,
                "active": True,
                "window": _window(ch.low, ch.high),
            }
            for ch in channels
        ],
        "rdefs": {"model": "color" if len(channels) > 1 else "greyscale"},
    }


def _window(low: float, high: float) -> dict[str, float]:
    low, high = float(low), float(high)
    high = high if high > low else low + 1.0  # a constant image still needs a non-empty window
    return {"start": low, "end": high, "min": low, "max": high}


def zarr_compressors(compression: Compression, dtype: np.dtype) -> Any:
    """The zarr v3 compressor(s) for one of :data:`COMPRESSIONS` (``None`` for ``none``)."""
    from zarr.codecs import BloscCodec, ZstdCodec  # deferred, like zarr itself

    if compression == "none":
        return None
    if compression == "zstd":
        return ZstdCodec(level=ZSTD_LEVEL, checksum=False)
    return BloscCodec(
        cname="lz4",
        clevel=LZ4_CLEVEL,
        shuffle="bitshuffle" if dtype.itemsize == 1 else "shuffle",
        typesize=dtype.itemsize,
    )


def group_metadata(name: str, pixel_size_um: float | None) -> dict[str, Any]:
    """The root ``zarr.json`` of a series store (NGFF 0.5 image, axes t/y/x)."""
    unit = None if pixel_size_um is None else "micrometer"
    px = 1.0 if pixel_size_um is None else float(pixel_size_um)
    multiscale = multiscale_entry(
        name,
        [ngff_axis("t", "time"), ngff_axis("y", "space", unit), ngff_axis("x", "space", unit)],
        [[1.0, px, px]],
        description="frames in acquisition order, one chunk per frame",
        method="scopeflow FrameJournal",
    )
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"ome": {"version": "0.5", "multiscales": [multiscale]}},
    }


def array_metadata_template(
    scratch: Path, shape: tuple[int, int], dtype: np.dtype, compression: Compression
) -> dict[str, Any]:
    """Let zarr-python create the ``(t, y, x)`` array metadata in ``scratch``; return it as JSON.

    ``scratch`` must be an empty or missing directory (it is left holding the array metadata).
    """
    import zarr  # deferred: importing zarr costs ~0.3 s and is only needed for a new series

    zarr.create_array(
        store=str(scratch),
        shape=(1, *shape),
        chunks=(1, *shape),
        dtype=dtype,
        compressors=zarr_compressors(compression, dtype),
        filters=None,
        fill_value=0,
        dimension_names=("t", "y", "x"),
        zarr_format=3,
    )
    meta: dict[str, Any] = json.loads((scratch / "zarr.json").read_text(encoding="utf-8"))
    return meta


def chunk_path(array_dir: Path, t: int) -> Path:
    """The chunk file of frame ``t`` (zarr v3 default chunk key encoding ``c/t/0/0``)."""
    return array_dir / "c" / str(t) / "0" / "0"


class ChunkCodec:
    """Encode/decode one ``(1, Y, X)`` chunk exactly as the array's zarr v3 ``codecs`` say.

    Supported: ``bytes`` (+ optional ``zstd`` or ``blosc``), which is what the journal writes.
    """

    def __init__(self, codecs: Sequence[Mapping[str, Any]], dtype: np.dtype, where: Path) -> None:
        if not codecs or codecs[0].get("name") != "bytes":
            raise JournalError(
                f"{where}: unsupported zarr codecs {list(codecs)!r}; the journal reads only arrays "
                "it wrote itself (bytes codec, optionally zstd or blosc)"
            )
        endian = codecs[0].get("configuration", {}).get("endian", "little")
        self.dtype = dtype.newbyteorder("<" if endian == "little" else ">")
        self.native = dtype.newbyteorder("=")
        self._compressor: Any = None
        rest = list(codecs[1:])
        if len(rest) > 1:
            raise JournalError(f"{where}: more than one compressor in {list(codecs)!r}")
        if rest:
            self._compressor = _numcodecs_compressor(rest[0], where)

    @property
    def compressed(self) -> bool:
        return self._compressor is not None

    def as_stored(self, block: np.ndarray) -> np.ndarray:
        """``block`` as the chunk's bytes hold it (stored byte order, C order; no copy if it is)."""
        return np.ascontiguousarray(block, dtype=self.dtype)

    def encode(self, frame: np.ndarray) -> memoryview | bytes:
        """Bytes of one chunk; ``frame`` has this codec's dtype (any byte order)."""
        view = memoryview(self.as_stored(frame)).cast("B")
        if self._compressor is None:
            return view
        out: bytes = self._compressor.encode(view)
        return out

    def decode(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        if self._compressor is not None:
            data = self._compressor.decode(data)
        expected = math.prod(shape) * self.dtype.itemsize
        if len(data) != expected:
            raise ValueError(f"chunk holds {len(data)} bytes, expected {expected}")
        return np.frombuffer(data, dtype=self.dtype).reshape(shape).astype(self.native, copy=False)


def _numcodecs_compressor(spec: Mapping[str, Any], where: Path) -> Any:
    import numcodecs  # deferred, like zarr

    name, cfg = spec.get("name"), dict(spec.get("configuration", {}))
    if name == "zstd":
        return numcodecs.Zstd(level=int(cfg.get("level", 0)), checksum=bool(cfg.get("checksum")))
    if name == "blosc":
        shuffles = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
        return numcodecs.Blosc(
            cname=str(cfg.get("cname", "lz4")),
            clevel=int(cfg.get("clevel", 5)),
            shuffle=shuffles[str(cfg.get("shuffle", "shuffle"))],
            blocksize=int(cfg.get("blocksize", 0)),
            typesize=int(cfg.get("typesize", 1)),
        )
    raise JournalError(
        f"{where}: unsupported zarr codec {dict(spec)!r} (journal writes zstd/blosc)"
    )
