"""What a reader tells the writer: scenes, their pixel geometry and metadata, and a region read.

Every reader presents each scene as a 5D ``(t, c, z, y, x)`` image (singleton axes included)
and reads one region of one plane at a time, so that the writer can stream a file of any size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "AXES",
    "ChannelInfo",
    "OriginalMetadata",
    "PhysicalSize",
    "PlaneInfo",
    "SceneInfo",
    "SourceReader",
    "default_channels",
]

AXES = ("t", "c", "z", "y", "x")
DEFAULT_COLORS = ("FFFFFF", "00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00")


@dataclass(frozen=True)
class PhysicalSize:
    """The spacing of one axis, in an NGFF unit name (``micrometer``, ``nanometer``, ``second``)."""

    value: float
    unit: str


@dataclass(frozen=True)
class ChannelInfo:
    """A channel's name and display colour (``RRGGBB``)."""

    name: str
    color: str = "FFFFFF"


@dataclass(frozen=True)
class PlaneInfo:
    """When and where one ``(t, c, z)`` plane was acquired, as far as the source says.

    ``delta_t_s`` is seconds since the start of the acquisition; positions are stage/focus
    coordinates in micrometres.
    """

    t: int
    c: int
    z: int
    delta_t_s: float | None = None
    position_x_um: float | None = None
    position_y_um: float | None = None
    position_z_um: float | None = None

    def as_json(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"t": self.t, "c": self.c, "z": self.z}
        for key in ("delta_t_s", "position_x_um", "position_y_um", "position_z_um"):
            value = getattr(self, key)
            if value is not None:
                out[key] = float(value)
        return out


@dataclass(frozen=True)
class SceneInfo:
    """One image of a source file (a CZI scene, an OME-TIFF series, an MRC volume)."""

    name: str
    shape: tuple[int, int, int, int, int]  # t, c, z, y, x
    dtype: np.dtype
    channels: tuple[ChannelInfo, ...]
    physical_sizes: dict[str, PhysicalSize] = field(default_factory=dict)  # keys among t, z, y, x
    planes: tuple[PlaneInfo, ...] = ()
    acquired: str | None = None  # ISO 8601 start of acquisition

    def __post_init__(self) -> None:
        if len(self.shape) != 5 or min(self.shape) < 1:
            raise ValueError(f"scene {self.name!r}: shape must be 5 positive sizes, {self.shape}")
        if len(self.channels) != self.shape[1]:
            raise ValueError(
                f"scene {self.name!r}: {len(self.channels)} channel names for "
                f"{self.shape[1]} channels"
            )


@dataclass(frozen=True)
class OriginalMetadata:
    """The source's own metadata document, stored verbatim beside the converted image.

    ``suffix`` names its kind in the stored file name: ``ome.xml``, ``czi.xml``, ``mrc.json``...
    """

    suffix: str
    text: str


@runtime_checkable
class SourceReader(Protocol):
    """A vendor file opened for conversion.

    ``read`` returns the ``(len(ys), len(xs))`` region of plane ``(t, c, z)`` of one scene, with
    the scene's dtype. Readers raise :class:`scopeflow.ConversionError` naming the file when it
    is truncated or corrupt. ``close`` releases the file; it may be called more than once.
    """

    path: Path
    format_name: str
    scenes: tuple[SceneInfo, ...]
    original_metadata: OriginalMetadata | None

    def read(self, scene: int, t: int, c: int, z: int, ys: slice, xs: slice) -> np.ndarray: ...

    def close(self) -> None: ...


def default_channels(count: int) -> tuple[ChannelInfo, ...]:
    """``C0``, ``C1``... in distinct colours, for sources that do not name their channels."""
    return tuple(
        ChannelInfo(f"C{i}", "FFFFFF" if count == 1 else DEFAULT_COLORS[i % len(DEFAULT_COLORS)])
        for i in range(count)
    )
