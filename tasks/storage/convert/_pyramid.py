"""2x2 mean downsampling of a block of rows, and the pyramid geometry."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["downsample_yx", "level_shapes"]


def level_shapes(
    shape: tuple[int, ...], chunk_yx: tuple[int, int], max_levels: int
) -> list[tuple[int, ...]]:
    """Shapes of the pyramid levels: halve y and x until a level fits in one chunk."""
    shapes = [tuple(shape)]
    while len(shapes) < max_levels:
        *lead, y, x = shapes[-1]
        if y <= chunk_yx[0] and x <= chunk_yx[1]:
            break
        shapes.append((*lead, math.ceil(y / 2), math.ceil(x / 2)))
    return shapes


def downsample_yx(block: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 pixel group over the last two axes (odd edges repeat their last pixel).

    Integer images are rounded half up and keep their dtype.
    """
    y, x = block.shape[-2:]
    if y % 2 or x % 2:
        pad = [(0, 0)] * (block.ndim - 2) + [(0, y % 2), (0, x % 2)]
        block = np.pad(block, pad, mode="edge")
    acc_type = np.float32 if block.dtype.itemsize <= 2 else np.float64
    acc = block[..., 0::2, 0::2].astype(acc_type)
    acc += block[..., 1::2, 0::2]
    acc += block[..., 0::2, 1::2]
    acc += block[..., 1::2, 1::2]
    if np.issubdtype(block.dtype, np.integer):
        return np.floor(acc / 4 + 0.5).astype(block.dtype)
    return (acc / 4).astype(block.dtype)
