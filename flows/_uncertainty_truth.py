"""Score an uncertainty-triggered run on a simulated edge against the simulator's ground truth.

The downstream task is counting nuclei (cell number per field over time, the readout of a
proliferation or viability assay): at every position and time point the run has either the
real expensive frame (segmented by ``reference_model``, as a static protocol's frames would
be) or only the cheap frame, and the nuclei the run logged as standing in for the expensive
one there (``stand_in``: what the run really had, whichever predictor made it; nothing is
re-predicted here). Each is matched to the true
nuclei the simulator draws at that place and sample time (detection F1: a found nucleus is a
predicted object whose centroid lies in a distinct true nucleus; pooled over the run; far
out-of-focus nuclei ignored).
The simulator is deterministic for a configuration and seed, so this process rebuilds the same
sample; the frames come back from the edge by index.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tasks.hardware import EdgeClient
from tasks.hardware.sim import SimulatorConfig, build_simulated_core, truth_labels
from tasks.inference import (
    InstanceScores,
    detection_scores,
    detection_scores_at,
    load_model,
    pool_scores,
)

from ._uncertainty_log import read_uncertainty_log

__all__ = ["score_uncertainty_on_simulation"]


def score_uncertainty_on_simulation(
    decisions: Path,
    config: SimulatorConfig,
    edge: EdgeClient,
    *,
    objective: str,
    reference_model: str = "classical",
    expensive_channel: str = "DAPI",
    expensive_exposure_ms: float = 50.0,
) -> dict[str, Any]:
    """``accuracy`` (pooled F1), its split into acquired and predicted frames, per frame rows;
    ``accuracy_paired``: the same run had every frame been acquired (each predicted frame's
    expensive frame rendered at its place and time, segmented as the acquired ones), so
    ``accuracy - accuracy_paired`` is the stand-ins' own loss, free of run-to-run noise."""
    _core, sim = build_simulated_core(config)
    reference = load_model(reference_model)
    pooled: dict[str, list[InstanceScores]] = {"acquired": [], "predicted": [], "paired": []}
    rows: list[dict[str, Any]] = []
    for r in read_uncertainty_log(decisions):
        if r.expensive_frame is not None:
            frame = edge.frame(r.expensive_frame)
            px = frame.header.pixel_size_um
            labels = reference.segment(frame.pixels, pixel_size_um=px)
            t_s, kind = float(r.expensive_time_s or r.cheap_time_s), "acquired"
        elif r.stand_in is None:
            raise ValueError(
                f"position {r.p} time point {r.t} was neither acquired nor logged a stand-in; "
                "score a log written by this version of the policy"
            )
        else:
            frame = edge.frame(r.cheap_frame)
            labels = None
            t_s, kind = r.cheap_time_s, "predicted"
        stage = frame.header.stage
        state = replace(
            sim.state(),
            x_um=stage.x,
            y_um=stage.y,
            z_um=stage.z,
            objective=objective,
            channel=expensive_channel,
            binning=1,
            t_s=t_s,
        )
        truth, ignore, _ids = truth_labels(sim, state)
        shape = tuple(frame.pixels.shape[-2:])
        if truth.shape != shape:
            raise ValueError(
                f"frame {frame.header.index} is {shape}, the simulator's configuration "
                f"draws {truth.shape}: score with the edge's own configuration"
            )
        if labels is None:
            scores = detection_scores_at(truth, np.asarray(r.stand_in), ignore=ignore)
            real = replace(state, exposure_ms=expensive_exposure_ms, illuminated=True)
            pixels = sim.renderer.render(real)[0].copy()
            real_labels = reference.segment(pixels, pixel_size_um=frame.header.pixel_size_um)
            pooled["paired"].append(detection_scores(truth, real_labels, ignore=ignore))
        else:
            scores = detection_scores(truth, labels, ignore=ignore)
            pooled["paired"].append(scores)
        pooled[kind].append(scores)
        rows.append({"p": r.p, "t": r.t, "kind": kind, "f1": round(scores.f1, 4)})
    everything = pooled["acquired"] + pooled["predicted"]

    def f1(scores: list[InstanceScores]) -> float | None:
        return round(pool_scores(scores).f1, 4) if scores else None

    return {
        "accuracy": f1(everything),
        "accuracy_acquired": f1(pooled["acquired"]),
        "accuracy_predicted": f1(pooled["predicted"]),
        "accuracy_paired": f1(pooled["paired"]),
        "nuclei_true": sum(s.tp + s.fn for s in everything),
        "frames_scored": len(rows),
        "frames": rows,
    }
