"""Photodamage: a cell given too much light stops dividing.

Each fluorescence channel's cumulative dose on a cell (ms at 100 % intensity, as the camera
adds it) is weighed by ``SimulatorConfig.photodamage_dose``: the dose of that channel alone
that arrests a cell. A cell whose weighted sum reaches 1 by the moment it would divide does not
divide: it stays in interphase for good (arrested; daughters inherit their parent's dose, so
they carry its damage). Off (``None``) by default.
"""

from __future__ import annotations

import numpy as np

from ._config import FLUORESCENCE_CHANNELS, SimulatorConfig

__all__ = ["arrested"]


def arrested(dose: np.ndarray, config: SimulatorConfig) -> np.ndarray:
    """Which cells, given their dose per fluorescence channel ((n, channels), in the order of
    ``FLUORESCENCE_CHANNELS``), are too damaged to divide (bool per cell)."""
    limits = config.photodamage_dose
    if limits is None:
        return np.zeros(len(dose), bool)
    harm = np.array([1.0 / limits.get(ch, np.inf) for ch in FLUORESCENCE_CHANNELS])
    return np.asarray(dose, float) @ harm >= 1.0
