"""Noise2Void: self-supervised denoising from noisy images alone (Krull et al., CVPR 2019).

A few pixels of each training crop are replaced by a random neighbour's value and the network
is asked to predict their original noisy values from the surroundings. Because pixel noise is
independent, the best such prediction is the clean signal: no clean target is ever needed, so
a model can be trained (or fine-tuned) on the very images it is meant to denoise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["N2V_MASK_FRACTION", "N2V_RADIUS", "n2v_mask"]

N2V_MASK_FRACTION = 0.02  # fraction of pixels blinded per crop
N2V_RADIUS = 2  # replacement drawn from the (2r+1)^2 window around the pixel, itself excluded


def n2v_mask(
    batch: np.ndarray,
    rng: np.random.Generator,
    fraction: float = N2V_MASK_FRACTION,
    radius: int = N2V_RADIUS,
) -> tuple[np.ndarray, np.ndarray]:
    """(masked copy of ``batch``, bool mask of the blinded pixels) for a (B, H, W) array.

    Blinded pixels are drawn on a jittered grid (one per cell of ~1/fraction pixels, as in
    the original N2V), each replaced by a uniformly chosen neighbour within ``radius``.
    """
    if batch.ndim != 3:
        raise ValueError(f"n2v_mask expects a (batch, rows, cols) array, got {batch.shape}")
    if not 0 < fraction < 1 or radius < 1:
        raise ValueError(f"need 0 < fraction < 1 and radius >= 1, got {fraction}, {radius}")
    b, h, w = batch.shape
    cell = max(2, round(1.0 / np.sqrt(fraction)))
    gy, gx = np.meshgrid(np.arange(0, h, cell), np.arange(0, w, cell), indexing="ij")
    n = gy.size
    bi = np.repeat(np.arange(b), n)
    ry = np.minimum(np.tile(gy.ravel(), b) + rng.integers(0, cell, b * n), h - 1)
    rx = np.minimum(np.tile(gx.ravel(), b) + rng.integers(0, cell, b * n), w - 1)
    # neighbour offsets in the window, never (0, 0)
    dy = rng.integers(-radius, radius + 1, b * n)
    dx = rng.integers(-radius, radius, b * n)
    dx = np.where((dy == 0) & (dx >= 0), dx + 1, dx)  # shift (0, >=0) right: skips the centre
    dx = np.where(dy != 0, rng.integers(-radius, radius + 1, b * n), dx)
    sy = np.clip(ry + dy, 0, h - 1)
    sx = np.clip(rx + dx, 0, w - 1)
    # at a border the clip can land back on the pixel itself: mirror the offset instead
    same = (sy == ry) & (sx == rx)
    sy = np.where(same, np.clip(ry - dy, 0, h - 1), sy)
    sx = np.where(same, np.clip(rx - dx, 0, w - 1), sx)
    masked = batch.copy()
    masked[bi, ry, rx] = batch[bi, sy, sx]
    mask = np.zeros(batch.shape, bool)
    mask[bi, ry, rx] = True
    return masked, mask
