"""Focus drift: the cell layer's height wanders over time, as on a real stand warming up.

Thermal drift of a widefield stand after the lamp, stage-top incubator or room settles is a few
micrometres over the first hour, then a slow creep (e.g. Nikon, "Perfect Focus System"
documentation: drift of several µm per hour on an unstabilised stand). Modelled as

    drift(t) = sign * (settle_um * (1 - exp(-t / settle_tau)) + rate * t)
               + sum_k a_k * (sin(w_k t + phi_k) - sin(phi_k))

a settling exponential plus a steady creep (the direction drawn from the seed) plus a smooth
random wander (sinusoids of periods between ``wander_period_min``, amplitudes and phases drawn
from the seed, RMS ``wander_um``). ``drift(0) = 0``, so the focus set at the start is right at
the start; the drift is a pure function of the seed and the time, so a copy of the sample knows
it at any instant (the ground truth an autofocus is scored on).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._random import hash_uniform

__all__ = ["FocusDrift", "focus_drift_um"]

_STREAM = 7_001  # counter-based random stream of the drift (apart from the cells' streams)


class FocusDrift(BaseModel):
    """Thermal focus drift of the simulated stand (``SimulatorConfig.focus_drift``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    settle_um: float = Field(3.0, ge=0, description="Settling drift reached after a few tau, µm.")
    settle_tau_min: float = Field(30.0, gt=0, description="Settling time constant, minutes.")
    rate_um_per_h: float = Field(2.0, ge=0, description="Steady creep after settling, µm/hour.")
    wander_um: float = Field(0.5, ge=0, description="RMS of the smooth random wander, µm.")
    wander_period_min: tuple[float, float] = Field(
        (15.0, 90.0), description="Shortest and longest period of the wander, minutes."
    )
    components: int = Field(4, ge=1, le=32, description="Sinusoids in the wander.")

    @model_validator(mode="after")
    def _check(self) -> FocusDrift:
        lo, hi = self.wander_period_min
        if not 0 < lo <= hi:
            raise ValueError(
                f"wander_period_min must be (shortest, longest) with 0 < shortest <= longest, "
                f"got {lo, hi}"
            )
        return self

    def max_rate_um_per_h(self) -> float:
        """An upper bound on |d drift / dt|, µm per hour (for an autofocus's sweep range)."""
        settle = self.settle_um / (self.settle_tau_min / 60.0)
        wander = self.wander_um * math.sqrt(2.0 * self.components) * 60.0
        wander *= 2 * math.pi / self.wander_period_min[0]
        return settle + self.rate_um_per_h + wander


def focus_drift_um(drift: FocusDrift, seed: int, t_s: float | np.ndarray) -> np.ndarray:
    """How far the cell layer has moved in z at time(s) ``t_s`` (s since the sample's start), µm."""
    t = np.asarray(t_s, dtype=np.float64)
    k = np.arange(drift.components + 2, dtype=np.int64)
    u = hash_uniform(seed, k, _STREAM)
    sign = 1.0 if u[0] < 0.5 else -1.0
    tau = drift.settle_tau_min * 60.0
    out = sign * (drift.settle_um * -np.expm1(-np.maximum(t, 0.0) / tau))
    out = out + sign * drift.rate_um_per_h * t / 3600.0
    n = drift.components
    lo, hi = drift.wander_period_min
    periods = 60.0 * lo * (hi / lo) ** hash_uniform(seed, k[:n], _STREAM + 1)
    phases = 2 * np.pi * hash_uniform(seed, k[:n], _STREAM + 2)
    weights = 0.5 + hash_uniform(seed, k[:n], _STREAM + 3)
    # RMS of a sum of sinusoids: sqrt(sum a^2 / 2)
    amps = drift.wander_um * weights * math.sqrt(2.0) / np.sqrt(np.sum(weights**2))
    w = 2 * np.pi / periods
    waves = np.sin(w[:, None] * t.ravel()[None, :] + phases[:, None]) - np.sin(phases)[:, None]
    wander = (amps[:, None] * waves).sum(axis=0).reshape(t.shape)
    return out + wander
