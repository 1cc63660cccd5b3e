"""Write one z-stack (or 2D image) as an OME-Zarr NGFF 0.5 image, atomically."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import JournalError

from ._ngff import OmeroChannel, multiscale_entry, ngff_axis, omero_entry

__all__ = ["write_zstack"]


def write_zstack(
    path: Path,
    stack: np.ndarray,
    *,
    pixel_size_um: float,
    z_step_um: float | None = None,
    name: str = "image",
    channel: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    t_step_s: float | None = None,
) -> Path:
    """Store ``stack`` (z, y, x) or (y, x) at ``path`` (a new ``*.ome.zarr`` folder); with
    ``t_step_s`` the leading axis is time (t, y, x), that many seconds apart.

    Written under a temporary name and renamed, so ``path`` is either absent or complete.
    ``attributes`` (JSON-able) go under ``attributes["scopeflow"]`` (provenance, stage position).
    """
    import zarr

    data = np.asarray(stack)
    if data.ndim not in (2, 3):
        raise ValueError(f"a stack is (z, y, x) or (y, x), got shape {data.shape}")
    if path.exists():
        raise JournalError(f"{path} exists already; choose a new path or remove it first")
    axes = [ngff_axis("y", "space", "micrometer"), ngff_axis("x", "space", "micrometer")]
    scale = [float(pixel_size_um), float(pixel_size_um)]
    if data.ndim == 3 and t_step_s is not None:
        axes.insert(0, ngff_axis("t", "time", "second"))
        scale.insert(0, float(t_step_s))
    elif data.ndim == 3:
        axes.insert(0, ngff_axis("z", "space", "micrometer"))
        scale.insert(0, float(z_step_um or 1.0))
    multiscale = multiscale_entry(
        name, axes, [scale], description="single resolution", method="scopeflow"
    )
    ome: dict[str, Any] = {"version": "0.5", "multiscales": [multiscale]}
    if channel is not None:
        low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 1.0)
        ome["omero"] = omero_entry([OmeroChannel(channel, "FFFFFF", low, high)])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.attrs.update({"ome": ome, "scopeflow": dict(attributes or {})})
        array = group.create_array(
            "0",
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.shape,
            dimension_names=[a["name"] for a in axes],
        )
        array[...] = data
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
