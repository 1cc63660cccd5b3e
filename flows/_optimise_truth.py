"""Ground-truth accuracy of an optimisation run's frames on a simulated edge.

The optimiser never sees ground truth (a real microscope has none); this is what the demo and
the benchmark report beside its image-based score: the classical segmentation of a trial's
frame against the simulator's true nuclei (F1 at IoU 0.5). The simulator is deterministic for
a configuration and seed, so this process rebuilds the same sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.hardware.sim import ScopeState, SimulatorConfig, build_simulated_core, truth_labels
from tasks.inference import instance_scores, load_model

__all__ = ["TruthScorer"]


class TruthScorer:
    """``scorer.f1(trial, pixels)``: F1 of the segmented frame against the true nuclei."""

    def __init__(self, config: SimulatorConfig, *, objective: str, channel: str) -> None:
        _, self._sim = build_simulated_core(config)
        self._config = config
        self._objective = objective
        self._channel = channel
        self._model = load_model("classical")

    def f1(self, trial: dict[str, Any], pixels: np.ndarray) -> float:
        state = ScopeState(
            x_um=float(trial["x_um"]),
            y_um=float(trial["y_um"]),
            z_um=0.0,
            objective=self._objective,
            channel=self._channel,
            exposure_ms=float(trial["exposure_ms"]),
            intensity_pct=float(trial["intensity_pct"]),
            binning=int(trial["binning"]),
        )
        truth, ignore, _ = truth_labels(self._sim, state)
        px = self._config.pixel_size_um(self._objective, int(trial["binning"]))
        pred = self._model.segment(pixels, pixel_size_um=px)
        return round(instance_scores(truth, pred, ignore=ignore).f1, 4)
