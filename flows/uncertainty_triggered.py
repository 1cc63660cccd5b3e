"""Uncertainty-triggered acquisition: predict the expensive channel, acquire it only when unsure.

Phases are Prefect tasks; the per-frame work is the closed-loop core (``tasks.live``) inside
the ``predict-or-acquire`` task: every time point each position's cheap frame (transmitted
light) goes to the workers, where the virtual-stain ensemble predicts the expensive channel's
nuclei and reports its uncertainty; the expensive frames are segmented by the reference model.
The pure ``UncertaintyTriggeredPolicy`` (``tasks.decisions``) acquires the expensive channel
there only when the uncertainty passes the threshold: the ensemble's own (``predictor:
virtual-stain``) or how much the model's nuclei changed since the last real frame there
(``carry-forward``: the last real nuclei, moved, stand in otherwise). Command ids come from the
run, the position and the time point: a re-run repeats no acquisition. Then each
position's frames are stored as OME-Zarr and the summary (expensive acquisitions and light dose
against acquiring the expensive channel every time point) becomes artifacts: the uncertainty
over time with the threshold and the frames really acquired, and a predicted-vs-acquired image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from tasks.decisions import CARRY_FORWARD_THRESHOLD
from tasks.hardware import SafetyEnvelope
from tasks.inference import InferenceBackend, load_model
from tasks.live import LoopSettings, RoutedAnalyzer, analyzer_for, route_by_index, run_edge_phase
from tasks.storage import write_zstack

from ._artifacts import publish_png, publish_summary
from ._live_analysis import live_analyzer
from ._microscope_run import microscope_run
from ._run_id import default_run_id
from ._uncertainty_log import UncertaintyRecord, read_uncertainty_log
from ._uncertainty_params import UncertaintyParams
from ._uncertainty_plots import render_comparison_png, render_uncertainty_png

__all__ = ["UncertaintyOutcome", "model_threshold", "uncertainty_triggered"]

PHASE = "uncertainty"


@dataclass(frozen=True)
class UncertaintyOutcome:
    """What the live phase leaves for the next ones (small: paths and numbers)."""

    run_dir: Path
    decisions_path: Path
    threshold: float
    loop: dict[str, Any]
    dose_before_mj: float


def model_threshold(params: UncertaintyParams) -> float:
    """The run's threshold: the params', else carry-forward's calibrated one, else the one
    calibrated with the model's weights. Loads the models here, so missing or corrupt weights
    stop the run before anything moves (ConfigurationError naming the training command)."""
    model = load_model(params.model, **params.model_options)
    load_model(params.reference_model)
    if params.threshold is not None:
        return params.threshold
    if params.predictor == "carry-forward":
        return CARRY_FORWARD_THRESHOLD
    calibrated = getattr(model, "threshold", None)
    if calibrated is None:
        from scopeflow import ConfigurationError

        raise ConfigurationError(
            f"model {params.model!r} has no calibrated threshold; set `threshold` in the params"
        )
    return float(calibrated)


@task(name="prepare-uncertainty", cache_policy=NO_CACHE)
def prepare_uncertainty(params: UncertaintyParams) -> tuple[int, float]:
    """Check both channels and the positions against the edge's envelope (an envelope that
    forbids the expensive channel stops the run here, before anything moves), switch the
    objective; returns the index the run's frames start from and the edge's dose so far."""
    with params.connect() as edge:
        edge.wait_until_idle()
        params.check_envelope(SafetyEnvelope.model_validate(edge.info()["envelope"]))
        edge.set_objective(params.objective)
        state = edge.state()
        return state.frames_journaled, state.light_dose.used_mj


@task(name="predict-or-acquire", cache_policy=NO_CACHE)
def predict_or_acquire(
    params: UncertaintyParams,
    run_id: str,
    run_dir: Path,
    first_frame: int,
    dose_before_mj: float,
    threshold: float,
    backend: InferenceBackend | None,
) -> UncertaintyOutcome:
    """The live loop: each cheap frame predicted on the workers, the expensive one acquired
    where the prediction is unsure and segmented here by the reference model (carry-forward
    keeps their nuclei), in this process: one classical segmentation per real frame."""
    analyzer = RoutedAnalyzer(
        {
            "cheap": live_analyzer(params, backend),
            "expensive": analyzer_for(None, local_model=params.reference_model),
        },
        route_by_index("c", "expensive", "cheap"),
        primary="cheap",
    )
    decisions_path = run_dir / "decisions.jsonl"
    with params.connect() as edge:
        report = run_edge_phase(
            edge,
            analyzer,
            params.policy(threshold),
            run_id=run_id,
            phase=PHASE,
            decisions_path=decisions_path,
            first_frame=first_frame,
            transport=params.transport,
            settings=LoopSettings(budget_ms=params.interval_s * 1e3),
        )
    create_markdown_artifact(
        f"# Loop latency, run {run_id}\n\n{report.markdown()}\n",
        key="uncertainty-loop-latency",
        description="Frame ready -> decision -> command, split",
    )
    return UncertaintyOutcome(run_dir, decisions_path, threshold, report.summary(), dose_before_mj)


@task(name="store-uncertainty", cache_policy=NO_CACHE)
def store_uncertainty(params: UncertaintyParams, outcome: UncertaintyOutcome) -> list[Path]:
    """Per position: the cheap channel at every time point and the expensive one where it was
    acquired, each an OME-Zarr (t, y, x) with its time points and edge frames as attributes."""
    records = read_uncertainty_log(outcome.decisions_path)
    stores: list[Path] = []
    with params.connect() as edge:
        for p, position in enumerate(params.positions):
            for role, setting in (("cheap", params.cheap), ("expensive", params.expensive)):
                rows = [r for r in records if r.p == p and r.frame_of(role) is not None]
                if not rows:
                    continue
                frames = [edge.frame(int(r.frame_of(role))) for r in rows]  # type: ignore[arg-type]
                store = outcome.run_dir / "positions" / position.name / f"{role}.ome.zarr"
                store.parent.mkdir(parents=True, exist_ok=True)
                stores.append(
                    write_zstack(
                        store,
                        np.stack([f.pixels for f in frames]),
                        pixel_size_um=frames[0].header.pixel_size_um,
                        t_step_s=params.interval_s,
                        name=f"{position.name} {setting.channel}",
                        channel=setting.channel,
                        attributes={
                            "role": role,
                            "time_points": [r.t for r in rows],
                            "uncertainty": [r.uncertainty for r in rows],
                            "threshold": outcome.threshold,
                            "edge_frames": [r.frame_of(role) for r in rows],
                        },
                    )
                )
    return stores


@task(name="summarise-uncertainty", cache_policy=NO_CACHE)
def summarise_uncertainty(
    params: UncertaintyParams, outcome: UncertaintyOutcome, stores: list[Path], started: float
) -> dict[str, Any]:
    """Expensive acquisitions and light dose against the static protocol (the expensive
    channel every time point), and the artifacts a person looks at."""
    records = read_uncertainty_log(outcome.decisions_path)
    with params.connect() as edge:
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        edge_state = edge.state()
        intensity = edge_state.intensity
        per_frame = {
            role: envelope.dose_mj(s.channel, s.exposure_ms, intensity)
            for role, s in (("cheap", params.cheap), ("expensive", params.expensive))
        }
        example = _example_images(params, edge, records)
    n = len(params.positions) * params.time_points
    acquired = sum(r.expensive_frame is not None for r in records)
    static_dose = n * (per_frame["cheap"] + per_frame["expensive"])
    measured = edge_state.light_dose.used_mj - outcome.dose_before_mj
    summary: dict[str, Any] = {
        "run_dir": str(outcome.run_dir),
        "protocol": params.protocol,
        "positions": len(params.positions),
        "time_points": params.time_points,
        "cheap_frames": len(records),
        "expensive_acquisitions": acquired,
        "expensive_acquisitions_static": n,
        "reduction": round(1.0 - acquired / n, 4) if n else None,
        "threshold": round(outcome.threshold, 5),
        "dose_mj": round(measured, 3),
        "dose_static_mj": round(static_dose, 3),
        "fallback_decisions": outcome.loop["fallback_decisions"],
        "refused": outcome.loop["refused"],
        "stores": [str(s) for s in stores],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    by_position = {
        pos.name: [r for r in records if r.p == p] for p, pos in enumerate(params.positions)
    }
    rows = [
        {
            "position": name,
            "cheap_frames": len(own),
            "expensive_acquired": sum(r.expensive_frame is not None for r in own),
            "max_uncertainty": round(max((r.uncertainty for r in own), default=0.0), 4),
        }
        for name, own in by_position.items()
    ]
    create_table_artifact(
        rows, key="uncertainty-positions", description="Acquisitions per position"
    )
    png = render_uncertainty_png(by_position, outcome.threshold)
    publish_png(
        png,
        key="uncertainty-over-time",
        description="Uncertainty per time point and position, the threshold (dashed) and the "
        "expensive frames really acquired (red)",
        path=outcome.run_dir / "uncertainty.png",
    )
    if example is not None:
        publish_png(
            example,
            key="uncertainty-predicted-vs-acquired",
            description="Cheap frame | nuclei predicted from it | the expensive frame acquired",
            path=outcome.run_dir / "predicted-vs-acquired.png",
        )
    publish_summary(
        "Uncertainty-triggered acquisition",
        summary,
        key="uncertainty-summary",
        description="Expensive acquisitions and light dose against acquiring every time point",
    )
    return summary


@flow(name="uncertainty-triggered", log_prints=True)
def uncertainty_triggered(params: UncertaintyParams) -> dict[str, Any]:
    """Prepare -> predict or acquire (the live loop) -> store -> summarise."""
    started = time.perf_counter()
    params.compute_profile()  # an unknown profile fails here, before the microscope moves
    threshold = model_threshold(params)  # so do missing or corrupt weights
    with microscope_run(params, params.run_id or default_run_id("uncertainty")) as run:
        first, dose_before = prepare_uncertainty(params)
        backend = run.open_backend(params)
        outcome = predict_or_acquire(
            params, run.run_id, run.run_dir, first, dose_before, threshold, backend
        )
        stores = store_uncertainty(params, outcome)
    return summarise_uncertainty(params, outcome, stores, started)


def _example_images(
    params: UncertaintyParams, edge: Any, records: list[UncertaintyRecord]
) -> bytes | None:
    """The most uncertain acquired frame: cheap | predicted nuclei | expensive, as a PNG."""
    acquired = [r for r in records if r.expensive_frame is not None]
    if not acquired:
        return None
    r = max(acquired, key=lambda r: r.uncertainty)
    cheap = edge.frame(r.cheap_frame)
    expensive = edge.frame(int(r.expensive_frame))  # type: ignore[arg-type]
    model = load_model(params.model, **params.model_options)
    predicted = model.segment(cheap.pixels, pixel_size_um=cheap.header.pixel_size_um)
    title = f"{params.positions[r.p].name} t{r.t}: uncertainty {r.uncertainty:.3f}"
    return render_comparison_png(cheap.pixels, predicted, expensive.pixels, title)
