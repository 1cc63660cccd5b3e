"""Pre-generated noise: background frames per camera setting, and a bank of unit normals.

Background (offset + background light + its shot noise + read noise) does not depend on where
the stage is, so it is drawn once per setting, a little larger than the frame, and each frame
is a crop at a random offset.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["BANK_SIDE", "PAD", "NoiseBank"]

PAD = 256  # extra rows/columns of a background field: (PAD + 1)**2 distinct crops
BANK_SIDE = 2048


class NoiseBank:
    def __init__(self, seed: int, max_fields: int = 6) -> None:
        self._seed = seed
        self._max_fields = max_fields
        self._unit: dict[tuple[int, int], np.ndarray] = {}
        self._fields: OrderedDict[tuple[int, int, float, float], tuple[np.ndarray, int]] = (
            OrderedDict()
        )
        self._normals: np.ndarray | None = None

    @property
    def normals(self) -> np.ndarray:
        """A square bank of standard normal float32 values; sprites take random windows."""
        if self._normals is None:
            rng = np.random.default_rng([self._seed, 1])
            self._normals = rng.standard_normal((BANK_SIDE, BANK_SIDE), dtype=np.float32)
        return self._normals

    def background(
        self, height: int, width: int, mean_adu: float, std_adu: float
    ) -> tuple[np.ndarray, int]:
        """uint16 field (height + PAD, width + PAD) of mean + std * N(0, 1), and its maximum."""
        key = (height, width, round(mean_adu, 4), round(std_adu, 4))
        hit = self._fields.get(key)
        if hit is not None:
            self._fields.move_to_end(key)
            return hit
        unit = self._unit.get((height, width))
        if unit is None:
            rng = np.random.default_rng([self._seed, 2, height, width])
            unit = rng.standard_normal((height + PAD, width + PAD), dtype=np.float32)
            self._unit[(height, width)] = unit
        f = unit * np.float32(std_adu)
        f += np.float32(mean_adu + 0.5)
        np.clip(f, 0, 65535, out=f)
        field = f.astype(np.uint16)
        hit = self._fields[key] = (field, int(field.max()))
        if len(self._fields) > self._max_fields:
            self._fields.popitem(last=False)
        return hit
