"""A stimulation pattern's spots (stage µm) drawn into a patterning device's mask."""

from __future__ import annotations

import numpy as np

from scopeflow import Stimulate

__all__ = ["pattern_mask"]


def pattern_mask(
    spots: Stimulate,
    stage: tuple[float, float],
    affine: tuple[float, float, float, float, float, float],
    shape: tuple[int, int],
) -> np.ndarray:
    """A (height, width) uint8 mask, 255 on the device pixels whose centres lie in a spot;
    ``affine`` maps one device pixel to stage µm (Micro-Manager order: a, b, tx, c, d, ty)."""
    a, b, _, c, d, _ = affine
    matrix = np.array([[a, b], [c, d]])
    inverse = np.linalg.inv(matrix)
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    scale = float(np.sqrt(abs(np.linalg.det(matrix))))
    for spot in spots.spots:
        u, v = inverse @ np.array([spot.x_um - stage[0], spot.y_um - stage[1]])
        col, row = u + (width - 1) / 2, v + (height - 1) / 2
        reach = spot.radius_um / scale + 1
        c0, c1 = max(0, int(col - reach)), min(width, int(col + reach) + 2)
        r0, r1 = max(0, int(row - reach)), min(height, int(row + reach) + 2)
        if c0 >= c1 or r0 >= r1:
            continue
        cc, rr = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
        du, dv = cc - (width - 1) / 2 - u, rr - (height - 1) / 2 - v
        dx, dy = a * du + b * dv, c * du + d * dv
        mask[r0:r1, c0:c1][dx**2 + dy**2 <= spot.radius_um**2] = 255
    return mask
