"""Apply a model to an array plane by plane: the one code path for the CLI and the flows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._protocol import RestorationModel, SegmentationModel

__all__ = ["restore_planes", "segment_planes"]


def _planes(
    image: np.ndarray, run: Callable[[np.ndarray], np.ndarray], dtype: type, what: str
) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        return np.asarray(run(arr), dtype)
    if arr.ndim != 3:
        raise ValueError(
            f"{what}: expected a 2D image (rows, cols) or a stack of planes (planes, rows, "
            f"cols), got shape {arr.shape}; split other axes (time, channel) into separate "
            "stacks first"
        )
    out = np.empty(arr.shape, dtype)
    for i, plane in enumerate(arr):
        result = np.asarray(run(plane))
        if result.shape != plane.shape:
            raise ValueError(
                f"{what}: the model returned shape {result.shape} for plane {i} of shape "
                f"{plane.shape}; a model must keep the plane's shape"
            )
        out[i] = result
    return out


def restore_planes(
    model: RestorationModel, image: np.ndarray, *, pixel_size_um: float | None = None
) -> np.ndarray:
    """float32 restored image of the same shape: a 2D image, or each plane of a 3D stack."""
    return _planes(
        image,
        lambda p: model.restore(p, pixel_size_um=pixel_size_um),
        np.float32,
        f"restore with {model.name!r}",
    )


def segment_planes(
    model: SegmentationModel, image: np.ndarray, *, pixel_size_um: float | None = None
) -> np.ndarray:
    """int32 labels of the same shape: a 2D image, or each plane of a 3D stack on its own.

    Labels are per plane (plane k's objects are numbered 1..N_k), not linked across planes.
    """
    return _planes(
        image,
        lambda p: model.segment(p, pixel_size_um=pixel_size_um),
        np.int32,
        f"segment with {model.name!r}",
    )
