"""Counter-based random numbers: the same (seed, key, stream) always gives the same value.

Used so a cell's properties depend only on its id, never on the order cells were queried in.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hash_normal", "hash_uniform"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _bits(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    base = _splitmix64(np.array([(seed & 0xFFFFFFFF) << 20 | (stream & 0xFFFFF)], np.uint64))
    with np.errstate(over="ignore"):
        return _splitmix64(np.asarray(keys, dtype=np.uint64) ^ base)


def hash_uniform(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) floats, one per key."""
    return (_bits(seed, keys, stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def hash_normal(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    """Standard normal floats, one per key (Box-Muller on two hashed uniforms)."""
    u1 = hash_uniform(seed, keys, 2 * stream + 1_000)
    u2 = hash_uniform(seed, keys, 2 * stream + 1_001)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
