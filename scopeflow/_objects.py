"""Results that cross from the workers to the decisions: the objects measured in one frame.

A worker sends these few numbers per object back instead of a full label image (a 2048² int32
label image is 16 MiB; 50 objects' measurements are 2 KiB), and a decision needs nothing else.
They are computed by ``tasks.inference.measure_objects``, next to the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ObjectTable"]


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
