"""Read the images to register: OME-Zarr stores, as OMERO wants their planes (z, then c, then t).

No OMERO here: this is what is tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import OmeroRejected

__all__ = ["OMERO_DTYPES", "ImageSource", "open_image_sources"]

# numpy dtypes an OMERO server stores as pixel types (int64, bool, complex are not)
OMERO_DTYPES = frozenset(
    {"int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"}
)
_AXES = "tczyx"  # NGFF order: time, channel, then space


@dataclass(frozen=True)
class ImageSource:
    """One OME-Zarr image (its full-resolution array) seen as OMERO's 5D image."""

    path: Path
    name: str
    array_path: str
    axes: str  # a subsequence of "tczyx" ending in "yx"
    shape: tuple[int, ...]
    dtype: str
    channel_names: tuple[str, ...]
    pixel_size_um: dict[str, float]  # physical size per spatial axis, when the unit is micrometer

    def size(self, axis: str) -> int:
        """Length along ``axis`` (1 when the image has no such axis)."""
        return self.shape[self.axes.index(axis)] if axis in self.axes else 1

    @property
    def plane_count(self) -> int:
        return self.size("z") * self.size("c") * self.size("t")

    def planes(self) -> Iterator[np.ndarray]:
        """Every (y, x) plane: z outermost, c, then t innermost (``createImageFromNumpySeq``)."""
        import zarr

        array = zarr.open_array(self.path / self.array_path, mode="r")
        for z in range(self.size("z")):
            for c in range(self.size("c")):
                for t in range(self.size("t")):
                    where = {"t": t, "c": c, "z": z}
                    index = tuple(where.get(a, slice(None)) for a in self.axes)
                    yield np.asarray(array[index])


def open_image_sources(path: Path) -> list[ImageSource]:
    """The image(s) at ``path``: one OME-Zarr image, or every ``*.ome.zarr`` image in a folder.

    Raises :class:`OmeroRejected` (naming the path and what is wrong) when nothing registrable is
    there; retrying will not change that.
    """
    path = Path(path)
    if not path.exists():
        raise OmeroRejected(f"{path} does not exist: pass the path of an OME-Zarr image or folder")
    if _is_image(path):
        return [_open_image(path)]
    if path.is_dir():
        stores = sorted(p for p in path.glob("*.ome.zarr") if _is_image(p))
        if stores:
            return [_open_image(p) for p in stores]
    raise OmeroRejected(
        f"{path} is neither an OME-Zarr image nor a folder of them (*.ome.zarr with "
        "'multiscales'); convert it first (scopeflow convert) or pass the .ome.zarr store"
    )


def _group_attrs(path: Path) -> dict[str, Any] | None:
    for name, pick in (("zarr.json", lambda d: d.get("attributes", {})), (".zattrs", dict)):
        file = path / name
        if file.is_file():
            try:
                return pick(json.loads(file.read_text()))
            except (OSError, ValueError) as exc:
                raise OmeroRejected(f"{file} is not readable JSON ({exc})") from exc
    return None


def _ome(attrs: dict[str, Any]) -> dict[str, Any]:
    return attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"; 0.4 keeps it at the top


def _is_image(path: Path) -> bool:
    attrs = _group_attrs(path) if path.is_dir() else None
    return bool(attrs and _ome(attrs).get("multiscales"))


def _open_image(path: Path) -> ImageSource:
    import zarr

    ome = _ome(_group_attrs(path) or {})
    multiscale = ome["multiscales"][0]
    names = [a["name"] if isinstance(a, dict) else str(a) for a in multiscale.get("axes", [])]
    axes = "".join(names)
    if not names or any(len(n) != 1 for n in names) or not _is_subsequence(axes, _AXES):
        raise OmeroRejected(
            f"{path}: axes {names} cannot be mapped to OMERO's t, c, z, y, x (in that order)"
        )
    if not axes.endswith("yx"):
        raise OmeroRejected(f"{path}: axes {names} must end in y, x")
    dataset = multiscale["datasets"][0]
    array = zarr.open_array(path / dataset["path"], mode="r")
    dtype = np.dtype(array.dtype).name
    if dtype not in OMERO_DTYPES:
        raise OmeroRejected(
            f"{path}: pixel type {dtype} has no OMERO equivalent; convert the data to one of "
            f"{sorted(OMERO_DTYPES)} first"
        )
    if len(array.shape) != len(axes):
        raise OmeroRejected(f"{path}: array has {len(array.shape)} dimensions, axes say {axes}")
    labels = [str(c.get("label", "")) for c in ome.get("omero", {}).get("channels", [])]
    size_c = array.shape[axes.index("c")] if "c" in axes else 1
    channel_names = tuple(labels) if len(labels) == size_c else ()
    return ImageSource(
        path=path,
        name=str(multiscale.get("name") or path.name.removesuffix(".ome.zarr")),
        array_path=str(dataset["path"]),
        axes=axes,
        shape=tuple(int(n) for n in array.shape),
        dtype=dtype,
        channel_names=channel_names,
        pixel_size_um=_pixel_sizes(multiscale, dataset),
    )


def _pixel_sizes(multiscale: dict[str, Any], dataset: dict[str, Any]) -> dict[str, float]:
    scale = next(
        (t["scale"] for t in dataset.get("coordinateTransformations", []) if t["type"] == "scale"),
        None,
    )
    if scale is None:
        return {}
    sizes: dict[str, float] = {}
    for axis, value in zip(multiscale.get("axes", []), scale, strict=False):
        if isinstance(axis, dict) and axis.get("unit") == "micrometer" and axis["name"] in "zyx":
            sizes[axis["name"]] = float(value)
    return sizes


def _is_subsequence(part: str, whole: str) -> bool:
    rest = iter(whole)
    return all(ch in rest for ch in part)
