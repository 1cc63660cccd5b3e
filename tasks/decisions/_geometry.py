"""Pixel <-> stage coordinates of a frame, from its stage position, pixel size and camera affine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameGeometry", "tile_grid"]


@dataclass(frozen=True)
class FrameGeometry:
    """Where a frame's pixels are on the stage.

    ``affine`` is Micro-Manager's pixel-size affine ``(a, b, tx, c, d, ty)``: a pixel offset
    (dcol, drow) from the image centre moves ``x = a*dcol + b*drow`` and ``y = c*dcol + d*drow``
    µm on the stage (it carries the pixel size, camera flips and rotation). The stage position
    is the image centre.
    """

    stage_x_um: float
    stage_y_um: float
    width: int
    height: int
    affine: tuple[float, float, float, float, float, float]

    @classmethod
    def simple(
        cls, stage_x_um: float, stage_y_um: float, width: int, height: int, pixel_size_um: float
    ) -> FrameGeometry:
        """Camera axes along the stage axes (no flip, no rotation)."""
        px = pixel_size_um
        return cls(stage_x_um, stage_y_um, width, height, (px, 0.0, 0.0, 0.0, px, 0.0))

    @property
    def pixel_size_um(self) -> float:
        a, b, _, c, d, _ = self.affine
        return float(np.sqrt(abs(a * d - b * c)))

    def to_stage(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage (x, y) in µm of pixel positions (sub-pixel allowed)."""
        a, b, _, c, d, _ = self.affine
        dcol = np.asarray(cols, dtype=float) - (self.width - 1) / 2
        drow = np.asarray(rows, dtype=float) - (self.height - 1) / 2
        return self.stage_x_um + a * dcol + b * drow, self.stage_y_um + c * dcol + d * drow

    def to_pixel(self, x_um: np.ndarray, y_um: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of stage positions; the inverse of `to_stage`."""
        a, b, _, c, d, _ = self.affine
        det = a * d - b * c
        if det == 0:
            raise ValueError(f"pixel affine {self.affine} is singular: check the pixel size")
        dx = np.asarray(x_um, dtype=float) - self.stage_x_um
        dy = np.asarray(y_um, dtype=float) - self.stage_y_um
        dcol = (d * dx - b * dy) / det
        drow = (-c * dx + a * dy) / det
        return drow + (self.height - 1) / 2, dcol + (self.width - 1) / 2

    @property
    def extent_um(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) covered on the stage."""
        rows = np.array([0, 0, self.height - 1, self.height - 1], dtype=float)
        cols = np.array([0, self.width - 1, 0, self.width - 1], dtype=float)
        x, y = self.to_stage(rows, cols)
        half = self.pixel_size_um / 2
        return (
            float(x.min() - half),
            float(y.min() - half),
            float(x.max() + half),
            float(y.max() + half),
        )


def tile_grid(
    region: tuple[float, float, float, float], fov_um: tuple[float, float], overlap: float
) -> list[tuple[float, float]]:
    """Tile centres covering ``region`` (x0, y0, x1, y1) with fields of ``fov_um`` (w, h).

    Neighbouring tiles overlap by ``overlap`` (a fraction of the field), so an object cut by
    one tile's border is whole in its neighbour. Rows alternate direction (serpentine).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    x0, y0, x1, y1 = region
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"region {region} is empty: give (x0, y0, x1, y1) with x1 > x0, y1 > y0")
    fw, fh = fov_um
    centres_x = _centres(x0, x1, fw, overlap)
    centres_y = _centres(y0, y1, fh, overlap)
    tiles = []
    for i, cy in enumerate(centres_y):
        row = centres_x if i % 2 == 0 else centres_x[::-1]
        tiles.extend((cx, cy) for cx in row)
    return tiles


def _centres(low: float, high: float, fov: float, overlap: float) -> list[float]:
    span = high - low
    if span <= fov:
        return [(low + high) / 2]
    step = fov * (1 - overlap)
    n = int(np.ceil((span - fov) / step)) + 1
    first = low + fov / 2
    last = high - fov / 2
    return [float(v) for v in np.linspace(first, last, n)]
