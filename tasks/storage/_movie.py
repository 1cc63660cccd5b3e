"""Time-lapse movies as a sequence of 2D frames, whatever they are stored in.

``open_movie(path)`` reads the layout (never the pixels) of:

- an OME-Zarr image (NGFF 0.4 or 0.5) with a ``t`` axis: level 0 of its multiscales; a
  bioformats2raw layout (several images, ``0/``, ``1/``...) picks one with ``position``;
- a single file that ``scopeflow convert`` reads (a TIFF stack, OME-TIFF, CZI, NDTiff...): its
  T axis, or for a plain (non-OME) TIFF without one, its only stacking axis (a ``(n, y, x)``
  stack is ``n`` time points); a file with several series picks one with ``position``;
- a folder of per-frame 2D TIFFs, in the order of the number in their names (``t000.tif``,
  ``man_track000.tif``, ``frame_12.tiff``...).

Channel and z plane are chosen by index; left unset, that axis must hold one entry. The returned
:class:`Movie` is small and picklable: workers read their own frames with ``movie.frame(t)``.
Every problem is a :class:`scopeflow.ConfigurationError` naming the path and the fix.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scopeflow import ConfigurationError, ConversionError

from ._chunked import open_image

__all__ = ["Movie", "open_movie"]

_TIFF = (".tif", ".tiff")
_NUMBER = re.compile(r"^(.*?)(\d+)(?:\.ome)?\.tiff?$", re.IGNORECASE)


@dataclass(frozen=True)
class Movie:
    """A (t, y, x) view of a stored movie: where each frame lives, not the frames themselves.

    ``kind``: ``ome-zarr`` (``source`` is the level-0 array, ``index`` one entry per axis,
    ``None`` at t, y and x; ``t_axis`` the position of t), ``file`` (``source`` a file read
    through the conversion readers, ``index`` = (scene, c, z), ``t_axis`` 0, 1 or 2 when time is
    stored as the file's t, c or z axis) or ``tiff-folder`` (``files``, one per frame).
    """

    path: Path
    kind: Literal["ome-zarr", "file", "tiff-folder"]
    frames: int
    height: int
    width: int
    dtype: str
    pixel_size_um: float | None
    selection: str
    source: str = ""
    index: tuple[int | None, ...] = ()
    t_axis: int = 0
    files: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as a 2D array (read now)."""
        if not 0 <= t < self.frames:
            raise IndexError(f"frame {t} is outside 0..{self.frames - 1} of {self.path}")
        if self.kind == "ome-zarr":
            where = tuple(
                t if i == self.t_axis else (slice(None) if v is None else v)
                for i, v in enumerate(self.index)
            )
            data = np.asarray(_zarr_array(self.source)[where])
        elif self.kind == "file":
            scene, c, z = (int(v or 0) for v in self.index)
            tcz = [0, c, z]
            tcz[self.t_axis] = t
            everything = slice(0, None)
            data = np.asarray(_source(self.source).read(scene, *tcz, everything, everything))
        else:
            data = _tiff_plane(Path(self.files[t]))
        if data.shape != (self.height, self.width):
            raise ConfigurationError(
                f"{self.path}: frame {t} has shape {data.shape}, the movie {self.height}x"
                f"{self.width}; every frame must have the same size"
            )
        return data

    def read(self) -> np.ndarray:
        """All frames as one (t, y, x) array."""
        out = np.empty(self.shape, np.dtype(self.dtype))
        for t in range(self.frames):
            out[t] = self.frame(t)
        return out


def open_movie(
    path: Path,
    *,
    channel: int | None = None,
    z: int | None = None,
    position: int | None = None,
    strict: bool = True,
) -> Movie:
    """The layout of the movie at ``path`` (see the module docstring).

    ``channel`` / ``z`` / ``position`` pick one entry of that axis by index; None asks for an
    axis with a single entry. With ``strict=False`` (label images that go with a movie) an index
    given for an axis that holds a single entry is ignored instead of refused.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigurationError(
            f"{path} does not exist; give an OME-Zarr image, a TIFF stack or a folder of "
            "per-frame TIFFs"
        )
    picks = _Picks(channel, z, position, strict)
    if path.is_dir() and _is_zarr(path):
        return _open_zarr(path, picks)
    if path.is_dir() and not (path / "NDTiff.index").is_file():
        return _open_folder(path, picks)
    return _open_file(path, picks)


@dataclass(frozen=True)
class _Picks:
    channel: int | None
    z: int | None
    position: int | None
    strict: bool

    def pick(self, path: Path, axis: str, size: int) -> int:
        """The index to read on an axis of ``size`` entries (axis: channel, z, position)."""
        wanted = getattr(self, axis)
        option = {"channel": "--channel", "z": "--z", "position": "--position"}[axis]
        plural = {"channel": "channels", "z": "z planes", "position": "positions"}[axis]
        if wanted is None or (size == 1 and not self.strict):
            if size == 1:
                return 0
            raise ConfigurationError(
                f"{path} has {size} {plural}; pick one with {option} N (0 to {size - 1})"
            )
        if not 0 <= wanted < size:
            raise ConfigurationError(
                f"{option} {wanted} is out of range: {path} has {size} {plural} (0 to {size - 1})"
            )
        return wanted


def _is_zarr(path: Path) -> bool:
    return any((path / name).is_file() for name in ("zarr.json", ".zattrs", ".zgroup"))


def _open_zarr(path: Path, picks: _Picks) -> Movie:
    import zarr

    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    image_path = path
    if "multiscales" not in ome:
        series = sorted(
            (k for k in group.group_keys() if k.isdigit()), key=int
        )  # bioformats2raw: 0/, 1/, ...
        if not series:
            raise ConfigurationError(
                f"{path} is a zarr group but not an OME-Zarr image (no 'multiscales'); for a "
                "plate, give the image group inside it (e.g. plate.zarr/A/1/0)"
            )
        image_path = path / series[picks.pick(path, "position", len(series))]
    elif picks.position not in (None, 0):
        picks.pick(path, "position", 1)
    try:
        image = open_image(image_path)
    except ConfigurationError:
        raise
    except Exception as exc:  # zarr raises many kinds on a damaged store
        raise ConfigurationError(f"{image_path}: cannot read the OME-Zarr image ({exc})") from exc
    names = [str(a.get("name", "")).lower() for a in image.axes]
    if "t" not in names:
        raise ConfigurationError(
            f"{image_path} has axes {tuple(names)}: no 't' axis, so it is not a time-lapse; "
            "a movie needs a t axis"
        )
    if names[-2:] != ["y", "x"]:
        raise ConfigurationError(
            f"{image_path} has axes {tuple(names)}; the last two must be y and x"
        )
    index: list[int | None] = []
    chosen = []
    for name, size in zip(names[:-2], image.shape[:-2], strict=True):
        if name == "t":
            index.append(None)
        elif name in ("c", "z"):
            i = picks.pick(image_path, "channel" if name == "c" else "z", size)
            index.append(i)
            chosen.append(f"{name}={i}")
        elif size == 1:
            index.append(0)
        else:
            raise ConfigurationError(
                f"{image_path}: axis {name!r} has {size} entries; only t, c, z, y and x are "
                "understood"
            )
    index += [None, None]
    frames = image.shape[names.index("t")]
    return Movie(
        path=path,
        kind="ome-zarr",
        frames=frames,
        height=image.shape[-2],
        width=image.shape[-1],
        dtype=image.dtype,
        pixel_size_um=image.pixel_size_um,
        selection=f"OME-Zarr {image.ngff_version} {image.array_url}, axes {''.join(names)}"
        + (f", {', '.join(chosen)}" if chosen else ""),
        source=image.array_url,
        index=tuple(index),
        t_axis=names.index("t"),
    )


def _open_file(path: Path, picks: _Picks) -> Movie:
    from tasks.storage.convert import open_source

    try:
        reader = open_source(path)
    except ConversionError as exc:
        raise ConfigurationError(f"cannot read {path} as a movie: {exc}") from exc
    try:
        scene = picks.pick(path, "position", len(reader.scenes))
        info = reader.scenes[scene]
        fmt = reader.format_name
    finally:
        reader.close()
    t, c, z, height, width = info.shape
    t_axis, note = 0, ""
    if t == 1 and fmt == "TIFF" and (c > 1) != (z > 1):
        t_axis = 1 if c > 1 else 2  # a plain (t, y, x) stack without axis names
        t, note = max(c, z), " (no time axis in the file: its planes are the time points)"
        c, z = 1, 1
    if t_axis == 0 and t == 1 and (c > 1 or z > 1):
        raise ConfigurationError(
            f"{path} holds a single time point (t, c, z = 1, {c}, {z}); a movie needs a time "
            "axis: save it with T (e.g. as an OME-TIFF or ImageJ hyperstack with frames)"
        )
    ci = picks.pick(path, "channel", c)
    zi = picks.pick(path, "z", z)
    px = info.physical_sizes.get("x")
    pixel = None
    if px is not None and px.unit == "micrometer":
        pixel = float(px.value)
    elif px is not None and px.unit == "nanometer":
        pixel = float(px.value) / 1000.0
    return Movie(
        path=path,
        kind="file",
        frames=t,
        height=height,
        width=width,
        dtype=str(np.dtype(info.dtype)),
        pixel_size_um=pixel,
        selection=f"{fmt} {path.name}, series {scene}, c={ci}, z={zi}{note}",
        source=str(path),
        index=(scene, ci, zi),
        t_axis=t_axis,
    )


def _open_folder(path: Path, picks: _Picks) -> Movie:
    numbered: dict[str, list[tuple[int, Path]]] = {}
    for file in path.iterdir():
        match = _NUMBER.match(file.name)
        if match and file.is_file():
            numbered.setdefault(match.group(1), []).append((int(match.group(2)), file))
    if not numbered:
        raise ConfigurationError(
            f"{path} holds no numbered TIFF frames (t000.tif, man_track000.tif, ...); give a "
            "folder of per-frame TIFFs, a TIFF stack or an OME-Zarr image"
        )
    if len(numbered) > 1:
        kinds = ", ".join(f"{stem}NNN.tif ({len(v)})" for stem, v in sorted(numbered.items()))
        raise ConfigurationError(
            f"{path} mixes several numbered series ({kinds}); keep one series per folder"
        )
    ((stem, entries),) = numbered.items()
    entries.sort()
    numbers = [n for n, _ in entries]
    if len(set(numbers)) != len(numbers):
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        raise ConfigurationError(
            f"{path}: frame number {twice[0]} appears twice ({stem}{twice[0]}...); keep one file "
            "per frame"
        )
    first = _tiff_plane(entries[0][1])
    if picks.strict:
        for axis in ("channel", "z"):
            if getattr(picks, axis) not in (None, 0):
                picks.pick(path, axis, 1)
    return Movie(
        path=path,
        kind="tiff-folder",
        frames=len(entries),
        height=first.shape[0],
        width=first.shape[1],
        dtype=str(first.dtype),
        pixel_size_um=_tiff_pixel_size(entries[0][1]),
        selection=f"folder of {len(entries)} TIFFs, {entries[0][1].name} .. {entries[-1][1].name}",
        files=tuple(str(f) for _, f in entries),
    )


def _tiff_plane(file: Path) -> np.ndarray:
    import tifffile

    try:
        data = np.asarray(tifffile.imread(file))
    except Exception as exc:  # tifffile raises many kinds on a damaged file
        raise ConfigurationError(f"cannot read {file} as a TIFF ({exc})") from exc
    data = np.squeeze(data) if data.ndim > 2 else data
    if data.ndim != 2:
        raise ConfigurationError(
            f"{file} has shape {data.shape}; each file of a frame folder must hold one 2D frame"
        )
    return data


def _tiff_pixel_size(file: Path) -> float | None:
    """µm per pixel from the TIFF resolution tags (cm / inch, or ImageJ's micron unit)."""
    import tifffile

    try:
        with tifffile.TiffFile(file) as tif:
            page = tif.pages[0]
            tag = page.tags.get("XResolution")
            unit = page.tags.get("ResolutionUnit")
            imagej_unit = (tif.imagej_metadata or {}).get("unit")
            if tag is None or not tag.value[0]:
                return None
            per_unit = tag.value[1] / tag.value[0]
            code = int(unit.value) if unit is not None else 1
    except Exception:  # a pixel size is only a hint; the frames are read (and checked) elsewhere
        return None
    if imagej_unit in ("micron", "um", "µm"):
        return per_unit
    return {3: per_unit * 1e4, 2: per_unit * 25400.0}.get(code)


_lock = threading.Lock()
_open: dict[tuple[str, str], Any] = {}


def _zarr_array(url: str) -> Any:
    with _lock:
        if ("zarr", url) not in _open:
            import zarr

            _open["zarr", url] = zarr.open_array(url, mode="r")
        return _open["zarr", url]


def _source(path: str) -> Any:
    """A conversion reader kept open per process (workers read many frames of one file)."""
    with _lock:
        if ("file", path) not in _open:
            from tasks.storage.convert import open_source

            _open["file", path] = open_source(Path(path))
        return _open["file", path]
