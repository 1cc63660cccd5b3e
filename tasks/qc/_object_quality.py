"""How good a fluorescence frame is for measuring its objects, from the frame alone.

What a real microscope can compute (no ground truth): the nuclei are segmented (the classical
model), and each object gets a score from its contrast-to-noise ratio (object mean minus the
background median, over the background's robust standard deviation: shot and read noise),
its saturated pixels (none wanted) and how many pixels it spans (``min_object_px``: what the
downstream measurement needs; heavy binning loses it). A frame's ``quality`` is the median
object score, in [0, 1]:

    score_i = (1 - exp(-cnr_i / cnr_target)) * (1 - saturated_i) * min(1, area_i / min_object_px)

Noise that Otsu splits into blobs gives objects of low contrast, so a dark frame scores low
without a special case; the median keeps a few out-of-focus cells from moving it. The score
does not depend on how many cells a field holds, so trials on different fields compare.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ObjectQuality", "QualityScale", "measure_object_quality"]


@dataclass(frozen=True)
class QualityScale:
    """``cnr_target``: contrast-to-noise at which an object scores 1 - 1/e; ``min_object_px``:
    pixels an object needs to score fully; ``full_scale``: the detector's saturation value
    (None: the dtype's maximum)."""

    cnr_target: float = 8.0
    min_object_px: float = 150.0
    full_scale: float | None = None


@dataclass(frozen=True)
class ObjectQuality:
    """One frame's quality and what it is made of (small: goes back from a worker)."""

    quality: float
    objects: int
    cnr_median: float
    saturated_fraction: float
    median_area_px: float
    background: float
    noise: float
    model_ms: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "error" or v is not None}


def measure_object_quality(
    payload: Any, pixel_size_um: float | None = None, scale: QualityScale | None = None
) -> ObjectQuality:
    """The quality of a frame payload (pixels, or a reference with ``load()``), run where the
    pixels are (a Ray/Dask worker via ``QCWorkers(measure=...)``, or in this process)."""
    started = time.perf_counter()
    scale = scale or QualityScale()
    load = getattr(payload, "load", None)
    pixels = np.asarray(load() if callable(load) else payload)
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    full = scale.full_scale
    if full is None:
        full = float(np.iinfo(pixels.dtype).max) if pixels.dtype.kind in "ui" else np.inf
    out = _quality(pixels, pixel_size_um, scale, full)
    return ObjectQuality(**{**out, "model_ms": (time.perf_counter() - started) * 1e3})


def _quality(
    pixels: np.ndarray, pixel_size_um: float | None, scale: QualityScale, full: float
) -> dict[str, Any]:
    from scipy import ndimage

    empty = {
        "quality": 0.0,
        "objects": 0,
        "cnr_median": 0.0,
        "saturated_fraction": float(np.mean(pixels >= full)) if pixels.size else 0.0,
        "median_area_px": 0.0,
        "background": float(np.median(pixels)) if pixels.size else 0.0,
        "noise": 0.0,
    }
    if pixels.ndim != 2 or min(pixels.shape) < 32:
        return {**empty, "error": f"a 2D frame of at least 32x32 is needed, got {pixels.shape}"}
    labels = _model().segment(pixels, pixel_size_um=pixel_size_um)
    n = int(labels.max())
    if n == 0:
        return empty
    image = pixels.astype(np.float64)
    near = ndimage.binary_dilation(labels > 0, iterations=3)
    background = image[~near]
    if background.size < 100:
        return {**empty, "objects": n, "error": "objects cover the frame: no background"}
    bg = float(np.median(background))
    noise = max(1.0, 1.4826 * float(np.median(np.abs(background - bg))))
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(image), labels, index)
    keep = area > 0
    index, area = index[keep], area[keep]
    mean = ndimage.mean(image, labels, index)
    saturated = ndimage.mean((pixels >= full).astype(np.float64), labels, index)
    cnr = (mean - bg) / noise
    score = (
        (1.0 - np.exp(-np.clip(cnr, 0.0, None) / scale.cnr_target))
        * (1.0 - saturated)
        * np.minimum(1.0, area / scale.min_object_px)
    )
    return {
        "quality": float(np.median(score)),
        "objects": int(index.size),
        "cnr_median": float(np.median(cnr)),
        "saturated_fraction": float(np.sum(saturated * area) / np.sum(area)),
        "median_area_px": float(np.median(area)),
        "background": bg,
        "noise": noise,
    }


@functools.cache
def _model() -> Any:
    from tasks.inference import load_model

    return load_model("classical")
