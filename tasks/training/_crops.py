"""Crops for restoration training: random windows, flips and rotations, and the percentile
normalisation the restoration models apply at inference."""

from __future__ import annotations

import numpy as np

from tasks.inference import percentile_range

__all__ = ["normalised_pair", "random_crop_window", "random_flip_rotation"]


def random_flip_rotation(rng: np.random.Generator, *arrays: np.ndarray) -> list[np.ndarray]:
    """The same random 90-degree rotation and horizontal flip of every array (float32)."""
    k = int(rng.integers(4))
    flip = rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k)
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a, dtype=np.float32))
    return out


def random_crop_window(
    shape: tuple[int, ...], size: int, rng: np.random.Generator
) -> tuple[slice, ...]:
    """A random ``size`` x ``size`` window inside a 2D ``shape``."""
    h, w = shape
    r = int(rng.integers(0, h - size + 1))
    c = int(rng.integers(0, w - size + 1))
    return slice(r, r + size), slice(c, c + size)


def normalised_pair(
    noisy: np.ndarray, ref: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``noisy`` and its reference scaled by the noisy image's percentile range (as CARE sees
    them at inference)."""
    lo, scale = percentile_range(noisy)
    return (noisy - lo) / scale, None if ref is None else (ref - lo) / scale
