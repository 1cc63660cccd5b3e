"""NGFF 0.5 ``labels``: a segmentation stored inside the image it was made from.

Layout (``image.ome.zarr`` is any NGFF 0.5 image group)::

    image.ome.zarr/labels/zarr.json          {"ome": {"version": "0.5", "labels": [name, ...]}}
    image.ome.zarr/labels/<name>/zarr.json   multiscales + "image-label" (source: ../../)
    image.ome.zarr/labels/<name>/0           the integer label array, same axes as the image
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConfigurationError

from ._ngff import multiscale_entry, zarr_compressors

__all__ = ["create_label_image", "label_names", "label_path"]

VALID_LABEL_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64")


def label_path(image: Path, name: str) -> Path:
    """Where the label image ``name`` of ``image`` lives."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigurationError(f"label name {name!r} must be a plain folder name, e.g. 'nuclei'")
    return image / "labels" / name


def label_names(image: Path) -> list[str]:
    """The names listed in ``image/labels/zarr.json`` (empty when there is none)."""
    meta = image / "labels" / "zarr.json"
    if not meta.exists():
        return []
    ome = json.loads(meta.read_text(encoding="utf-8")).get("attributes", {}).get("ome", {})
    return list(ome.get("labels", []))


def create_label_image(
    image: Path,
    name: str,
    *,
    axes: Sequence[Mapping[str, Any]],
    scale: Sequence[float],
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: str = "uint32",
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """Create (or replace) the label image ``name`` in ``image``; returns its zarr array ``0``.

    ``axes`` and ``scale`` are the image's own (a label image is on the image's grid);
    ``attributes`` (JSON-able) go under ``attributes["scopeflow"]`` (provenance).
    """
    import zarr

    if dtype not in VALID_LABEL_DTYPES:
        raise ConfigurationError(f"label dtype {dtype!r} is not one of {VALID_LABEL_DTYPES}")
    path = label_path(image, name)
    multiscale = multiscale_entry(
        name, axes, [scale], description="instance labels", method="scopeflow segment-dataset"
    )
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs.update(
        {
            "ome": {
                "version": "0.5",
                "multiscales": [multiscale],
                "image-label": {"version": "0.5", "source": {"image": "../../"}},
            },
            "scopeflow": dict(attributes or {}),
        }
    )
    array = group.create_array(
        "0",
        shape=tuple(shape),
        chunks=tuple(chunks),
        dtype=np.dtype(dtype),
        fill_value=0,
        compressors=zarr_compressors("zstd", np.dtype(dtype)),
        dimension_names=[a["name"] for a in axes],
    )
    _list_label(image, name)
    return array


def _list_label(image: Path, name: str) -> None:
    import zarr

    names = label_names(image)
    if name not in names:
        names.append(name)
    group = zarr.open_group(image / "labels", mode="a", zarr_format=3)
    group.attrs.update({"ome": {"version": "0.5", "labels": names}})
