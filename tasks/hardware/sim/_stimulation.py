"""Patterned light on the simulated sample: a DMD (an SLM) over the camera's field, and an
optogenetic reporter that the light switches on.

The DMD's mirrors map one to one onto the camera's pixels at binning 1 (a calibrated projector,
as Micro-Manager's Projector plugin leaves it): a cell whose centre lies under an "on" mirror
while the pattern is displayed is stimulated. A pulse of ``duration`` ms at ``intensity`` %
gives the cell a dose of ``duration x intensity / 100`` (ms at 100 %, the sample's dose unit),
which also bleaches its GFP label (the stimulation light excites it), and raises its reporter:
activation ``gain x (1 - 2^(-dose / half_dose))``, decaying with ``off_time_s``, brightens its
GFP signal by ``1 + activation``. The truth keeps every pulse and each stimulated cell's dose.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymmcore_plus.experimental.unicore import SLMDevice, pymm_property

from scopeflow import HardwareError

if TYPE_CHECKING:
    from ._devices import Rig

__all__ = ["Reporter", "SimDMD", "StimulationConfig"]


class StimulationConfig(BaseModel):
    """The optogenetic reporter's response to light."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gain: float = Field(1.5, ge=0, description="Largest reporter activation (GFP x (1 + gain))")
    half_dose: float = Field(
        100.0, gt=0, description="Dose (ms at 100 %) that gives half the largest activation"
    )
    off_time_s: float = Field(1_800.0, gt=0, description="Activation decay time constant, s")
    bleach_channel: str = Field("GFP", description="Label the stimulation light bleaches")


class Reporter:
    """Per-cell stimulation pulses and the reporter activation they cause (thread-safe)."""

    def __init__(self, config: StimulationConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._pulses: dict[int, list[tuple[float, float]]] = {}  # id -> [(t_s, dose)]
        self.patterns: list[dict[str, Any]] = []

    def stimulate(self, ids: np.ndarray, t_s: float, dose: float) -> None:
        with self._lock:
            for cell in ids.tolist():
                self._pulses.setdefault(int(cell), []).append((t_s, dose))

    def activation(self, ids: np.ndarray, t_s: float) -> np.ndarray:
        cfg = self.config
        out = np.zeros(len(ids))
        with self._lock:
            if not self._pulses:
                return out
            for k, cell in enumerate(np.asarray(ids).tolist()):
                for t_p, dose in self._pulses.get(int(cell), ()):
                    if t_p <= t_s:
                        rise = cfg.gain * (1.0 - math.exp2(-dose / cfg.half_dose))
                        out[k] += rise * math.exp(-(t_s - t_p) / cfg.off_time_s)
        return np.minimum(out, cfg.gain)

    def gfp_gain(self, ids: np.ndarray, t_s: float) -> np.ndarray:
        """What the reporter multiplies each cell's GFP signal by."""
        return 1.0 + self.activation(ids, t_s)

    def truth(self, t_s: float) -> dict[str, Any]:
        with self._lock:
            ids = np.array(sorted(self._pulses), np.int64)
            doses = [sum(d for t, d in self._pulses[int(i)] if t <= t_s) for i in ids]
            patterns = [dict(p) for p in self.patterns if p["t_s"] <= t_s]
        activation = self.activation(ids, t_s)
        cells = [
            {"id": int(i), "stim_dose": float(d), "activation": float(a)}
            for i, d, a in zip(ids, doses, activation, strict=True)
            if d > 0
        ]
        return {"patterns": patterns, "stimulated_cells": cells}


class SimDMD(SLMDevice):
    """A digital micromirror device: ``set_image`` loads a mask (0 off, > 0 on), the exposure
    is the pulse length in ms, ``Intensity`` its light source in percent; ``display_image``
    fires the pulse on the cells under the on mirrors."""

    def __init__(self, rig: Rig, reporter: Reporter) -> None:
        super().__init__()
        self._rig = rig
        self._reporter = reporter
        cfg = rig.config
        self._image = np.zeros((cfg.height, cfg.width), np.uint8)
        self._exposure = 100.0
        self._intensity = 0.0

    def shape(self) -> tuple[int, ...]:
        return self._image.shape

    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def set_image(self, pixels: np.ndarray) -> None:
        self._image = np.asarray(pixels, np.uint8).copy()

    def get_image(self) -> np.ndarray:
        return self._image.copy()

    def set_exposure(self, interval_ms: float) -> None:
        if not 0 < interval_ms <= 600_000:
            raise HardwareError(f"DMD exposure {interval_ms} ms is outside 0..600000 ms")
        self._exposure = float(interval_ms)

    def get_exposure(self) -> float:
        return self._exposure

    @pymm_property(limits=(0.0, 100.0), name="Intensity")
    def intensity(self) -> float:
        """Stimulation light source power, percent."""
        return self._intensity

    @intensity.setter
    def intensity(self, value: float) -> None:
        self._intensity = float(value)

    def display_image(self) -> None:
        rig, mask = self._rig, self._image > 0
        state = rig.state(exposure_ms=self._exposure, binning=1)
        dose = self._exposure * self._intensity / 100.0
        x0, y0, x1, y1 = rig.renderer.field_of_view(state)
        cells = rig.renderer.sample.cells_at(state.t_s, (x0, y0, x1, y1))
        col, row = rig.renderer.stage_to_pixel(state, cells.x_um, cells.y_um)
        c, r = np.rint(col).astype(np.int64), np.rint(row).astype(np.int64)
        h, w = mask.shape
        inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        lit = np.zeros(len(cells), bool)
        lit[inside] = mask[r[inside], c[inside]]
        ids = cells.ids[lit]
        if dose > 0 and ids.size:
            self._reporter.stimulate(ids, state.t_s, dose)
            sample = rig.renderer.sample
            sample.add_dose_to(ids, self._reporter.config.bleach_channel, dose)
        self._reporter.patterns.append(
            {
                "t_s": state.t_s,
                "duration_ms": self._exposure,
                "intensity": self._intensity,
                "on_fraction": float(mask.mean()),
                "stage": [state.x_um, state.y_um],
                "cells": ids.tolist(),
                "dose": dose,
            }
        )
