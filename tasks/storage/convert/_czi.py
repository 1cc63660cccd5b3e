"""ZEISS CZI through czifile: scenes, mosaics, T/Z/C, streamed one subblock at a time."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConversionError

from ._model import (
    ChannelInfo,
    OriginalMetadata,
    PhysicalSize,
    PlaneInfo,
    SceneInfo,
    default_channels,
)

__all__ = ["CziReader"]

_PLANE_AXES = ("S", "T", "C", "Z")
_IGNORED_IF_SINGLE = frozenset("BHRIVAQ")  # phases, rotations, illuminations...: only size 1
_DECODED_CACHE = 8  # subblocks kept decoded between row bands of the same plane
_READ_ERRORS = (ValueError, OSError, struct.error, IndexError, KeyError, EOFError, ET.ParseError)


@dataclass(frozen=True)
class _Tile:
    """One subblock: the plane it belongs to and where it lies in its scene's plane."""

    entry: Any  # czifile.DirectoryEntryDV
    plane: tuple[int, int, int, int]  # s, t, c, z
    y: int
    x: int
    height: int
    width: int


class CziReader:
    """A CZI file opened for conversion (see :class:`SourceReader`)."""

    format_name = "CZI"

    def __init__(self, path: Path) -> None:
        import czifile

        self.path = path
        errors = (*_READ_ERRORS, czifile.SegmentNotFoundError)
        try:
            self._czi = czifile.CziFile(str(path))
        except errors as exc:
            raise ConversionError(
                f"{path}: not a readable CZI file ({exc}); the file is truncated or corrupt, "
                "copy it again from the microscope PC"
            ) from exc
        try:
            xml = self._czi.metadata()
            root = ET.fromstring(xml) if xml else ET.Element("ImageDocument")
            self._tiles, bounds = self._index_tiles()
            self.scenes = self._scene_infos(root, bounds)
        except ConversionError:
            self.close()
            raise
        except errors as exc:
            self.close()
            raise ConversionError(
                f"{path}: the CZI directory or metadata cannot be read ({exc}); the file is "
                "truncated or corrupt, copy it again from the microscope PC"
            ) from exc
        self.original_metadata = OriginalMetadata("czi.xml", xml) if xml else None
        self._decoded: OrderedDict[int, np.ndarray] = OrderedDict()

    def close(self) -> None:
        self._czi.close()

    def read(self, scene: int, t: int, c: int, z: int, ys: slice, xs: slice) -> np.ndarray:
        info = self.scenes[scene]
        out = np.zeros((ys.stop - ys.start, xs.stop - xs.start), dtype=info.dtype)
        for tile in self._tiles.get((scene, t, c, z), ()):
            y0, y1 = max(ys.start, tile.y), min(ys.stop, tile.y + tile.height)
            x0, x1 = max(xs.start, tile.x), min(xs.stop, tile.x + tile.width)
            if y0 >= y1 or x0 >= x1:
                continue
            data = self._decode(tile)
            out[y0 - ys.start : y1 - ys.start, x0 - xs.start : x1 - xs.start] = data[
                y0 - tile.y : y1 - tile.y, x0 - tile.x : x1 - tile.x
            ]
        return out

    def _decode(self, tile: _Tile) -> np.ndarray:
        key = id(tile.entry)
        cached = self._decoded.get(key)
        if cached is not None:
            self._decoded.move_to_end(key)
            return cached
        try:
            data = tile.entry.data_segment().data()
        except Exception as exc:  # czifile raises bare ValueError/KeyError/struct.error here
            raise ConversionError(
                f"{self.path}: subblock at plane {tile.plane} cannot be decoded ({exc!r}); the "
                "file is truncated or corrupt, or uses a compression czifile does not support"
            ) from exc
        plane = np.asarray(data).reshape(tile.height, tile.width)
        self._decoded[key] = plane
        if len(self._decoded) > _DECODED_CACHE:
            self._decoded.popitem(last=False)
        return plane

    def _index_tiles(
        self,
    ) -> tuple[dict[tuple[int, int, int, int], list[_Tile]], dict[int, list[int]]]:
        czi = self._czi
        axes = czi.axes
        for axis, size in zip(axes, czi.shape, strict=True):
            if axis in _IGNORED_IF_SINGLE and size > 1:
                raise ConversionError(
                    f"{self.path}: CZI dimension {axis!r} has {size} entries; scopeflow converts "
                    "S/T/C/Z/M (scenes, time, channels, z, mosaic tiles) only -- export the file "
                    "from ZEN with that dimension split into separate files"
                )
        if axes.endswith("0") and czi.shape[-1] != 1:
            raise ConversionError(
                f"{self.path}: RGB CZI ({czi.shape[-1]} samples per pixel) is not supported; "
                "export it from ZEN as separate channels"
            )
        tiles: dict[tuple[int, int, int, int], list[_Tile]] = {}
        origin = dict(zip(axes, czi.start, strict=False))
        raw: list[tuple[Any, tuple[int, int, int, int], int, int, int, int]] = []
        for entry in czi.subblock_directory:
            dims = {d.dimension: d for d in entry.dimension_entries}
            if entry.pyramid_type or dims["Y"].size != dims["Y"].stored_size:
                continue  # ZEN's own downscaled copies; scopeflow builds its own pyramid
            plane = tuple(
                int(dims[a].start - origin.get(a, 0)) if a in dims else 0 for a in _PLANE_AXES
            )
            raw.append(
                (
                    entry,
                    (plane[0], plane[1], plane[2], plane[3]),
                    int(dims["Y"].start),
                    int(dims["X"].start),
                    int(dims["Y"].size),
                    int(dims["X"].size),
                )
            )
        if not raw:
            raise ConversionError(f"{self.path}: the CZI holds no image subblocks")
        bounds: dict[int, list[int]] = {}  # scene -> [y0, x0, y1, x1]
        for _, plane, y, x, h, w in raw:
            b = bounds.setdefault(plane[0], [y, x, y + h, x + w])
            b[:] = [min(b[0], y), min(b[1], x), max(b[2], y + h), max(b[3], x + w)]
        for entry, plane, y, x, h, w in sorted(raw, key=lambda r: r[0].mosaic_index or 0):
            b = bounds[plane[0]]
            tiles.setdefault(plane, []).append(_Tile(entry, plane, y - b[0], x - b[1], h, w))
        return tiles, bounds

    def _scene_infos(self, root: ET.Element, bounds: dict[int, list[int]]) -> tuple[SceneInfo, ...]:
        czi = self._czi
        sizes = dict(zip(czi.axes, czi.shape, strict=False))
        t_n, c_n, z_n = sizes.get("T", 1), sizes.get("C", 1), sizes.get("Z", 1)
        dtype = np.dtype(czi.dtype)
        channels = _channels(root, c_n)
        physical = _physical_sizes(root, self._time_increment())
        names = {
            int(s.get("Index", i)): s.get("Name") or f"scene {i}"
            for i, s in enumerate(root.iterfind(".//Dimensions/S/Scenes/Scene"))
        }
        acquired = root.findtext("./Metadata/Information/Image/AcquisitionDateAndTime")
        scenes = []
        for s in sorted(bounds):
            y0, x0, y1, x1 = bounds[s]
            name = names.get(s) or self.path.name.split(".")[0]
            if len(bounds) == 1 and s not in names:
                name = self.path.name.split(".")[0]
            scenes.append(
                SceneInfo(
                    name=name,
                    shape=(t_n, c_n, z_n, y1 - y0, x1 - x0),
                    dtype=dtype,
                    channels=channels,
                    physical_sizes=physical,
                    planes=self._planes(s),
                    acquired=acquired,
                )
            )
        return tuple(scenes)

    def _time_increment(self) -> float | None:
        for attachment in self._czi.attachments():
            if attachment.attachment_entry.name == "TimeStamps":
                stamps = np.asarray(attachment.data(), dtype=np.float64)
                if stamps.size > 1:
                    return float(np.mean(np.diff(stamps)))
        return None

    def _planes(self, scene: int) -> tuple[PlaneInfo, ...]:
        """Per-plane time and stage position from each subblock's metadata (first tile)."""
        found: list[tuple[tuple[int, int, int], datetime | None, dict[str, Any]]] = []
        for (s, t, c, z), tiles in sorted(self._tiles.items()):
            if s != scene:
                continue
            tags = (tiles[0].entry.data_segment().metadata() or {}).get("Tags") or {}
            if not isinstance(tags, dict):
                continue
            found.append(((t, c, z), _parse_time(tags.get("AcquisitionTime")), tags))
        times = [when for _, when, _ in found if when is not None]
        start = min(times) if times else None
        planes = []
        for (t, c, z), when, tags in found:
            delta = (when - start).total_seconds() if when and start else None
            x, y, f = (
                _float(tags.get(k)) for k in ("StageXPosition", "StageYPosition", "FocusPosition")
            )
            if delta is None and x is None and y is None and f is None:
                continue
            planes.append(PlaneInfo(t, c, z, delta, x, y, f))
        return tuple(planes)


def _channels(root: ET.Element, count: int) -> tuple[ChannelInfo, ...]:
    info = root.findall("./Metadata/Information/Image/Dimensions/Channels/Channel")
    display = root.findall("./Metadata/DisplaySetting/Channels/Channel")
    defaults = default_channels(count)
    channels = []
    for i in range(count):
        sources = [els[i] for els in (info, display) if i < len(els)]
        name = next((el.get("Name") for el in sources if el.get("Name")), defaults[i].name)
        color = next(
            (_rgb(el.findtext("Color")) for el in sources if _rgb(el.findtext("Color"))), None
        )
        channels.append(ChannelInfo(name, color or defaults[i].color))
    return tuple(channels)


def _rgb(text: str | None) -> str | None:
    """ZEN writes ``#AARRGGBB``; NGFF wants ``RRGGBB``."""
    if not text:
        return None
    digits = text.strip().lstrip("#")
    if len(digits) == 8:
        digits = digits[2:]
    return digits.upper() if len(digits) == 6 else None


def _physical_sizes(root: ET.Element, time_increment: float | None) -> dict[str, PhysicalSize]:
    sizes: dict[str, PhysicalSize] = {}
    for distance in root.iterfind("./Metadata/Scaling/Items/Distance"):
        axis, value = (distance.get("Id") or "").lower(), _float(distance.findtext("Value"))
        if axis in ("x", "y", "z") and value is not None and value > 0:
            sizes[axis] = PhysicalSize(value * 1e6, "micrometer")  # CZI stores metres
    if time_increment is not None and time_increment > 0:
        sizes["t"] = PhysicalSize(time_increment, "second")
    return sizes


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _parse_time(text: object) -> datetime | None:
    """ZEN times carry 7 fractional digits, more than ``fromisoformat`` accepts before 3.11."""
    if not isinstance(text, str) or not text:
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        when = datetime.fromisoformat(head)
    except ValueError:
        return None
    micro = int((frac + "000000")[:6]) if frac.isdigit() else 0
    return when.replace(microsecond=micro)
