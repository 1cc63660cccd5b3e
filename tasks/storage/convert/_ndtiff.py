"""Micro-Manager 2.0 / pycro-manager NDTiff datasets through the ``ndtiff`` package.

An NDTiff dataset is a folder: ``NDTiff.index`` (one entry per image: its axes, stack file, pixel
offset, size and type) and ``*_NDTiffStack*.tif`` files holding uncompressed pixels and per-image
JSON metadata. ``ndtiff`` parses the index, the summary and the image metadata; pixels are read
one region at a time from the offsets in its index (memory-mapped), so nothing larger than the
requested region is ever held. Axes: ``time``/``channel``/``z`` map to t/c/z; ``position`` (and
tile ``row``/``column``) become scenes.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import warnings
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

__all__ = ["INDEX_NAME", "NdtiffReader", "dataset_folder"]

INDEX_NAME = "NDTiff.index"
_PLANE_AXES = {"time": "t", "channel": "c", "z": "z"}
_SCENE_AXES = ("position", "row", "column")
# ndtiff pixel types (SingleNDTiffReader): 8 bit, 16 bit, 8-bit RGB, 10/12/14/11 bit in 16
_DTYPES = {0: np.dtype("<u1"), 1: np.dtype("<u2"), 3: np.dtype("<u2")}
_DTYPES.update({4: np.dtype("<u2"), 5: np.dtype("<u2"), 6: np.dtype("<u2")})
_RGB = 2
_READ_ERRORS = (
    OSError,
    ValueError,  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
    struct.error,
    KeyError,
    IndexError,
    RuntimeError,
)


def dataset_folder(path: Path) -> Path | None:
    """The NDTiff dataset folder that ``path`` names (the folder or its index), else ``None``."""
    if path.is_dir() and (path / INDEX_NAME).is_file():
        return path
    if path.name.lower() == INDEX_NAME.lower() and path.is_file():
        return path.parent
    return None


@dataclass(frozen=True)
class _Image:
    """Where one image's pixels lie: its stack file and byte offset."""

    filename: str
    offset: int


class NdtiffReader:
    """An NDTiff dataset opened for conversion (see :class:`SourceReader`)."""

    format_name = "NDTiff"

    def __init__(self, path: Path) -> None:
        folder = dataset_folder(path)
        if folder is None:
            raise ConversionError(
                f"{path}: not an NDTiff dataset (no {INDEX_NAME}); give the dataset folder that "
                f"holds {INDEX_NAME} and the *_NDTiffStack*.tif files"
            )
        self.path = folder
        self._index_path = folder / INDEX_NAME
        self._maps: dict[str, np.memmap] = {}
        if (folder / "Full resolution").is_dir():
            raise ConversionError(
                f"{folder}: a multi-resolution (stitched, 'Full resolution') NDTiff dataset is "
                "not supported; convert the full-resolution tiles from Micro-Manager's "
                "export, or acquire without the explore/pyramid option"
            )
        self._dataset = self._open(folder)
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _open(self, folder: Path) -> Any:
        from ndtiff import NDTiffDataset
        from ndtiff.ndtiff_index import read_ndtiff_index

        index_path = self._index_path
        data = index_path.read_bytes()
        if not data:
            raise ConversionError(
                f"{index_path} is empty: the dataset holds no images (the acquisition wrote "
                "nothing, or the copy is incomplete); copy the dataset folder again"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "not properly terminated": a finished index
                entries = read_ndtiff_index(data, verbose=False)
        except _READ_ERRORS as exc:
            raise ConversionError(
                f"{index_path}: the NDTiff index cannot be read ({exc!r}); the index is "
                "truncated or corrupt, copy the dataset folder again from the acquisition computer"
            ) from exc
        for entry in entries.values():
            stack = folder / entry.filename
            if not stack.is_file():
                raise ConversionError(
                    f"{stack}: this stack file, listed in {index_path}, is missing; copy the "
                    "whole dataset folder again from the acquisition computer"
                )
        try:
            # ndtiff prints its progress ("Reading index...") to stdout: keep the CLI's clean
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return NDTiffDataset(str(folder))
        except Exception as exc:  # ndtiff raises bare Exception for a bad stack-file header
            raise ConversionError(
                f"{folder}: a stack file of this NDTiff dataset cannot be read ({exc!r}); it is "
                "truncated, corrupt or not an NDTiff file -- copy the dataset folder again and "
                "keep only the dataset's own *.tif files in it"
            ) from exc

    def _scan(self) -> None:
        dataset = self._dataset
        if getattr(dataset, "major_version", 0) < 3:
            raise ConversionError(
                f"{self.path}: NDTiff version {dataset.major_version}.{dataset.minor_version} is "
                "not supported (scopeflow reads NDTiff 3.x, Micro-Manager 2.0 gamma and later)"
            )
        index: dict[frozenset[tuple[str, Any]], Any] = dataset.index
        if not index:
            raise ConversionError(f"{self._index_path}: the index lists no images")
        self.summary: dict[str, Any] = dict(dataset.summary_metadata or {})
        coords = [dict(key) for key in index]
        self._check_axes(coords)
        values = {
            axis: _ordered({c[axis] for c in coords if axis in c}, coords, axis)
            for axis in (*_PLANE_AXES, *_SCENE_AXES)
        }
        channel_values = _channel_order(values["channel"], self.summary)
        scene_keys = sorted({tuple(c.get(a) for a in _SCENE_AXES) for c in coords}, key=_sort_key)
        t_values, z_values = values["time"] or [None], values["z"] or [None]
        c_values = channel_values or [None]

        entries = list(index.items())
        first = entries[0][1]
        width, height = int(first.image_width), int(first.image_height)
        dtype = self._dtype(first)
        sizes = self._stack_sizes(entries)
        self._images: dict[tuple[int, int, int, int], _Image] = {}
        metadata: dict[tuple[int, int, int, int], dict[str, Any]] = {}
        t_pos = {v: i for i, v in enumerate(t_values)}
        c_pos = {v: i for i, v in enumerate(c_values)}
        z_pos = {v: i for i, v in enumerate(z_values)}
        s_pos = {v: i for i, v in enumerate(scene_keys)}
        for key, entry in entries:
            c = dict(key)
            where = (
                s_pos[tuple(c.get(a) for a in _SCENE_AXES)],
                t_pos[c.get("time")],
                c_pos[c.get("channel")],
                z_pos[c.get("z")],
            )
            if (int(entry.image_width), int(entry.image_height)) != (width, height):
                raise ConversionError(
                    f"{self.path / entry.filename}: image {c} is {entry.image_width}x"
                    f"{entry.image_height}, the first is {width}x{height}; scopeflow converts "
                    "datasets whose images all have one size"
                )
            if self._dtype(entry) != dtype:
                raise ConversionError(
                    f"{self.path / entry.filename}: image {c} has another pixel type than the "
                    "first image; scopeflow converts datasets of one pixel type"
                )
            end = int(entry.pix_offset) + width * height * dtype.itemsize
            if end > sizes[entry.filename]:
                raise ConversionError(
                    f"{self.path / entry.filename}: the stack file ends at byte "
                    f"{sizes[entry.filename]} but image {c} ends at byte {end}; the file is "
                    "truncated, copy the dataset folder again from the acquisition computer"
                )
            self._images[where] = _Image(entry.filename, int(entry.pix_offset))
            metadata[where] = self._image_metadata(entry, c)
        shape = (len(t_values), len(c_values), len(z_values))
        expected = len(scene_keys) * shape[0] * shape[1] * shape[2]
        if len(self._images) != expected:
            missing = [
                (s, t, c, z)
                for s in range(len(scene_keys))
                for t in range(shape[0])
                for c in range(shape[1])
                for z in range(shape[2])
                if (s, t, c, z) not in self._images
            ]
            raise ConversionError(
                f"{self._index_path}: {len(missing)} of {expected} images of the "
                f"{len(scene_keys)} position(s) x {shape[0]} time(s) x {shape[1]} channel(s) x "
                f"{shape[2]} z grid are missing (first missing (position, t, c, z): "
                f"{missing[0]}); the index is truncated or the acquisition was aborted -- copy "
                "the dataset again, or acquire positions with equal z-stacks"
            )
        channels = self._channels(channel_values, metadata)
        physical = self._physical_sizes(metadata, shape, z_values)
        acquired = _start_time(self.summary.get("StartTime"))
        base = self.path.name
        scenes = []
        for s, key in enumerate(scene_keys):
            name = str(metadata[(s, 0, 0, 0)].get("PositionName") or "")
            if not name:
                label = ", ".join(
                    f"{a} {v}" for a, v in zip(_SCENE_AXES, key, strict=True) if v is not None
                )
                name = f"{base} {label}" if label else base
            scenes.append(
                SceneInfo(
                    name=name,
                    shape=(*shape, height, width),
                    dtype=dtype.newbyteorder("="),
                    channels=channels,
                    physical_sizes=physical,
                    planes=_planes(s, shape, metadata),
                    acquired=acquired,
                )
            )
        self.scenes = tuple(scenes)
        self._dtype_read = dtype
        self.original_metadata = OriginalMetadata(
            "ndtiff.json", json.dumps(self.summary, indent=1, default=str)
        )

    def _check_axes(self, coords: list[dict[str, Any]]) -> None:
        known = {*_PLANE_AXES, *_SCENE_AXES}
        for axis in sorted({a for c in coords for a in c} - known):
            found = {c.get(axis) for c in coords}
            if len(found) > 1:
                raise ConversionError(
                    f"{self._index_path}: NDTiff axis {axis!r} has {len(found)} values; "
                    "scopeflow converts time, channel, z, position, row and column only -- "
                    f"split the dataset by {axis!r} (e.g. with ndtiff's as_array) first"
                )

    def _dtype(self, entry: Any) -> np.dtype:
        kind = int(entry.pixel_type)
        if kind == _RGB:
            raise ConversionError(
                f"{self.path / entry.filename}: RGB NDTiff images are not supported; acquire or "
                "export them as separate channels"
            )
        if kind not in _DTYPES:
            raise ConversionError(
                f"{self.path / entry.filename}: unknown NDTiff pixel type {kind}; the index is "
                "corrupt or written by a newer NDTiff -- update scopeflow and ndtiff"
            )
        if int(getattr(entry, "pixel_compression", 0)) != 0:
            raise ConversionError(
                f"{self.path / entry.filename}: compressed NDTiff pixels are not supported"
            )
        return _DTYPES[kind]

    def _stack_sizes(self, entries: list[tuple[Any, Any]]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for _, entry in entries:
            name = entry.filename
            if name in sizes:
                continue
            stack = self.path / name
            if not stack.is_file():
                raise ConversionError(
                    f"{stack}: this stack file, listed in {self._index_path}, is missing; copy "
                    "the whole dataset folder again from the acquisition computer"
                )
            sizes[name] = stack.stat().st_size
        return sizes

    def _image_metadata(self, entry: Any, coords: dict[str, Any]) -> dict[str, Any]:
        try:
            reader = self._dataset._readers_by_filename[entry.filename]  # noqa: SLF001 - ndtiff has no public per-file reader
            found = reader.read_metadata(entry)
        except _READ_ERRORS as exc:
            raise ConversionError(
                f"{self.path / entry.filename}: the metadata of image {coords} cannot be read "
                f"({exc!r}); the file is truncated or corrupt, copy the dataset folder again"
            ) from exc
        return found if isinstance(found, dict) else {}

    def _channels(
        self, values: list[Any], metadata: dict[tuple[int, int, int, int], dict[str, Any]]
    ) -> tuple[ChannelInfo, ...]:
        count = max(1, len(values))
        defaults = default_channels(count)
        names: list[str] = []
        summary_names = self.summary.get("ChNames")
        for i, value in enumerate(values):
            if isinstance(value, str):
                names.append(value)
            elif isinstance(summary_names, list) and i < len(summary_names):
                names.append(str(summary_names[i]))
            else:
                names.append(str(metadata[(0, 0, i, 0)].get("Channel") or defaults[i].name))
        if not names or len(set(names)) != len(names):
            names = [d.name for d in defaults]
        colors = self.summary.get("ChColors")
        out = []
        for i, name in enumerate(names):
            color = defaults[i].color
            if isinstance(colors, list) and i < len(colors) and isinstance(colors[i], int):
                color = f"{colors[i] & 0xFFFFFF:06X}"
            out.append(ChannelInfo(name, color))
        return tuple(out)

    def _physical_sizes(
        self,
        metadata: dict[tuple[int, int, int, int], dict[str, Any]],
        shape: tuple[int, int, int],
        z_values: list[Any],
    ) -> dict[str, PhysicalSize]:
        first = metadata[(0, 0, 0, 0)]
        sizes: dict[str, PhysicalSize] = {}
        pixel = _positive(self.summary.get("PixelSize_um")) or _positive(first.get("PixelSizeUm"))
        if pixel is not None:
            sizes["y"] = sizes["x"] = PhysicalSize(pixel, "micrometer")
        t_n, _, z_n = shape
        if z_n > 1:
            step = _positive(self.summary.get("z-step_um"))
            if step is None:
                zs = [_float(metadata[(0, 0, 0, z)].get("ZPositionUm")) for z in range(z_n)]
                if all(v is not None for v in zs):
                    diffs = np.diff(np.asarray(zs, dtype=np.float64))
                    step = _positive(abs(float(np.median(diffs))))
            if step is not None:
                sizes["z"] = PhysicalSize(step, "micrometer")
        if t_n > 1:
            times = [_float(metadata[(0, t, 0, 0)].get("ElapsedTime-ms")) for t in range(t_n)]
            interval = None
            if all(v is not None for v in times):
                interval = _positive(float(np.mean(np.diff(np.asarray(times, np.float64)))) / 1e3)
            if interval is None:
                ms = _positive(self.summary.get("Interval_ms"))
                interval = ms / 1e3 if ms is not None else None
            if interval is not None:
                sizes["t"] = PhysicalSize(interval, "second")
        return sizes

    # -- reading ---------------------------------------------------------------------------

    def read(self, scene: int, t: int, c: int, z: int, ys: slice, xs: slice) -> np.ndarray:
        image = self._images[(scene, t, c, z)]
        info = self.scenes[scene]
        height, width = info.shape[3], info.shape[4]
        try:
            data = self._maps.get(image.filename)
            if data is None:
                data = np.memmap(self.path / image.filename, dtype=np.uint8, mode="r")
                self._maps[image.filename] = data
            size = height * width * info.dtype.itemsize
            plane = data[image.offset : image.offset + size].view(self._dtype_read)
            return np.array(plane.reshape(height, width)[ys, xs], dtype=info.dtype)
        except (OSError, ValueError) as exc:
            raise ConversionError(
                f"{self.path / image.filename}: image (t={t}, c={c}, z={z}) of scene {scene} "
                f"cannot be read ({exc}); the file is truncated or corrupt"
            ) from exc

    def close(self) -> None:
        maps, self._maps = self._maps, {}
        for data in maps.values():
            mmap = getattr(data, "_mmap", None)
            if mmap is not None:
                with contextlib.suppress(BufferError, ValueError):
                    mmap.close()
        dataset = getattr(self, "_dataset", None)
        if dataset is not None:
            self._dataset = None
            dataset.close()


def _ordered(found: set[Any], coords: list[dict[str, Any]], axis: str) -> list[Any]:
    """Integer axis values sorted; string values in order of first appearance in the index."""
    if not found:
        return []
    if all(isinstance(v, int) for v in found):
        return sorted(found)
    seen: list[Any] = []
    for c in coords:
        if axis in c and c[axis] not in seen:
            seen.append(c[axis])
    return seen


def _channel_order(values: list[Any], summary: dict[str, Any]) -> list[Any]:
    """String channels in the summary's ``ChNames`` order when it lists them all."""
    names = summary.get("ChNames")
    strings = all(isinstance(v, str) for v in values)
    if values and strings and isinstance(names, list) and set(values) <= set(names):
        return [n for n in names if n in set(values)]
    return values


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[int, str], ...]:
    return tuple(
        (-1, "") if v is None else (0, f"{v:012d}" if isinstance(v, int) else v) for v in key
    )


def _planes(
    scene: int, shape: tuple[int, int, int], metadata: dict[tuple[int, int, int, int], dict]
) -> tuple[PlaneInfo, ...]:
    planes = []
    for t in range(shape[0]):
        for c in range(shape[1]):
            for z in range(shape[2]):
                md = metadata[(scene, t, c, z)]
                elapsed = _float(md.get("ElapsedTime-ms"))
                x, y, f = (_float(md.get(k)) for k in ("XPositionUm", "YPositionUm", "ZPositionUm"))
                if elapsed is None and x is None and y is None and f is None:
                    continue
                planes.append(
                    PlaneInfo(t, c, z, None if elapsed is None else elapsed / 1e3, x, y, f)
                )
    return tuple(planes)


def _float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _positive(value: object) -> float | None:
    out = _float(value)
    return out if out is not None and out > 0 else None


def _start_time(text: object) -> str | None:
    """Micro-Manager writes ``2024-05-01 10:11:12.345 +0200``; NGFF readers want ISO 8601."""
    if not isinstance(text, str) or not text.strip():
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S.%f %z", "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S.%f"):
        try:
            return datetime.strptime(text.strip(), fmt).isoformat()
        except ValueError:
            continue
    return None
