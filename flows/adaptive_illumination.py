"""Adaptive illumination with a light-dose budget: each cell gets the light it needs, no more.

Phases are Prefect tasks; the per-frame work is the closed-loop core (``tasks.live``) inside the
``illuminate`` task: every position's frame goes to the workers as a reference, the object
table comes back with the frame's background level and noise, and the pure
``AdaptiveIlluminationPolicy`` (``tasks.decisions``) measures the followed cell's SNR and sets
that position's next exposure and intensity (a command id per position and time point: a retry
or a re-run under the same ``run_id`` repeats no exposure).

**SNR, as a microscopist measures it**: the followed cell's mean intensity minus the
background's mean, divided by the background's standard deviation (the noise a viewer sees
around the cell). On the workers the cell is the segmented object nearest the frame centre and
the background every pixel outside the objects, within 4 robust sigmas of its median (so the
dim halo of blurred cells is left out); scored on the simulator (``_illumination_truth``) the
cell is its ground-truth mask and the background every pixel at least 2 µm from any cell.

**The dose budget** is the edge's: its envelope refuses an exposure whose light (the channel's
power x intensity x exposure time) does not fit in ``light_dose_budget_mj`` of the sample's
data dir, whose used dose (``dose.json``) survives a restart; a channel without a power value
is refused when the envelope is loaded. A position whose next frame the edge refuses stops
there, with the edge's reason in the summary; its frames and decisions so far are stored.
An envelope that forbids the light the policy may choose (exposure, intensity, channel,
objective, positions) stops the run in ``prepare``, before anything is illuminated.
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

from scopeflow import ConfigurationError, EnvelopeViolation
from tasks.decisions import AdaptiveIlluminationPolicy, IlluminationState
from tasks.hardware import SafetyEnvelope
from tasks.inference import InferenceBackend
from tasks.live import LoopSettings, run_edge_phase
from tasks.storage import write_zstack

from ._artifacts import publish_png, publish_summary
from ._illumination_log import frames_by_position, stop_reasons
from ._illumination_params import AdaptiveIlluminationParams
from ._illumination_plots import render_dose_png, render_light_png
from ._live_analysis import live_analyzer
from ._microscope_run import microscope_run
from ._run_id import default_run_id

__all__ = ["IlluminationOutcome", "adaptive_illumination", "cumulative_dose"]

PHASE = "illum"
_STORED = ("t", "exposure_ms", "intensity_percent", "snr", "sample_time_s", "frame")
INTENSITY = ("Illumination", "Intensity")


@dataclass(frozen=True)
class IlluminationOutcome:
    """What the illuminate phase leaves for the next ones (small: paths and numbers)."""

    run_dir: Path
    decisions_path: Path
    loop: dict[str, Any]
    capped: dict[str, int]
    stopped: dict[str, str]
    dose_before_mj: float


@task(name="prepare-adaptive-illumination", cache_policy=NO_CACHE)
def prepare_adaptive_illumination(params: AdaptiveIlluminationParams) -> tuple[int, float]:
    """Check the light the policy may choose and the positions against the edge's envelope (one
    it forbids stops the run here, before anything is illuminated), switch the objective;
    returns the index the run's frames start from and the edge's light dose so far."""
    with params.connect() as edge:
        edge.wait_until_idle()
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        check_against_envelope(params, envelope)
        edge.set_objective(params.objective)
        state = edge.state()
        return state.frames_journaled, state.light_dose.used_mj


def check_against_envelope(params: AdaptiveIlluminationParams, envelope: SafetyEnvelope) -> None:
    """ConfigurationError naming the limit and the fix for any light or place the run may ask
    for that the envelope forbids."""
    where = "adaptive illumination"
    try:
        envelope.check_objective(params.objective, where)
        envelope.check_channel(params.channel, where)
        envelope.power_mw(params.channel, where)
        envelope.check_exposure(params.exposure_range_ms[1], f"{where}: exposure_range_ms max")
        envelope.check_intensity(
            params.intensity_range_percent[1], f"{where}: intensity_range_percent max"
        )
        if INTENSITY[1] not in envelope.allowed_properties.get(INTENSITY[0], frozenset()):
            raise EnvelopeViolation(
                f"{where}: the envelope's allowed_properties do not let events set "
                f"{INTENSITY[0]}.{INTENSITY[1]}, which the policy adapts",
                limit="allowed_properties",
                value=".".join(INTENSITY),
            )
        for p in params.positions:
            envelope.check_position(p.x_um, p.y_um, params.z_um, f"position {p.name}")
    except EnvelopeViolation as exc:
        raise ConfigurationError(
            f"the edge's envelope forbids what this run may ask for: {exc}; narrow "
            "exposure_range_ms / intensity_range_percent (or the positions) in the params file "
            "to fit the envelope, or widen the envelope (nothing was illuminated)"
        ) from exc


@task(name="illuminate", cache_policy=NO_CACHE)
def illuminate(
    params: AdaptiveIlluminationParams,
    run_id: str,
    run_dir: Path,
    first_frame: int,
    dose_before_mj: float,
    backend: InferenceBackend | None,
) -> IlluminationOutcome:
    """The live loop: every frame analysed, its position's next light decided."""
    policy = AdaptiveIlluminationPolicy(params.position_tuples(), params.rules())
    analyzer = live_analyzer(params, backend)
    decisions_path = run_dir / "decisions.jsonl"
    with params.connect() as edge:
        report = run_edge_phase(
            edge,
            analyzer,
            policy,
            run_id=run_id,
            phase=PHASE,
            decisions_path=decisions_path,
            first_frame=first_frame,
            transport=params.transport,
            settings=LoopSettings(budget_ms=params.interval_s * 1e3),
        )
    state: IlluminationState = report.state
    names = [p.name for p in params.positions]
    stopped = {names[p]: why for p, why in stop_reasons(decisions_path).items()}
    for name, why in stopped.items():
        print(f"position {name} stopped early: {why}")
    create_markdown_artifact(
        f"# Loop latency, run {run_id}\n\n{report.markdown()}\n",
        key="illumination-loop-latency",
        description="Frame ready -> decision -> command, split",
    )
    capped = {pos.name: pos.capped for pos in state.positions if pos.capped}
    return IlluminationOutcome(
        run_dir, decisions_path, report.summary(), capped, stopped, dose_before_mj
    )


@task(name="store-illumination", cache_policy=NO_CACHE)
def store_illumination(
    params: AdaptiveIlluminationParams, outcome: IlluminationOutcome
) -> list[Path]:
    """One OME-Zarr (t, y, x) per position, with each frame's exposure, intensity, measured SNR,
    sample time and edge index in the store's attributes."""
    stores: list[Path] = []
    per_position = frames_by_position(outcome.decisions_path)
    with params.connect() as edge:
        for p, rows in sorted(per_position.items()):
            name = params.positions[p].name
            frames = [edge.frame(r["frame"]) for r in rows]
            store = outcome.run_dir / "positions" / f"{name}.ome.zarr"
            store.parent.mkdir(parents=True, exist_ok=True)
            stores.append(
                write_zstack(
                    store,
                    np.stack([f.pixels for f in frames]),
                    pixel_size_um=frames[0].header.pixel_size_um,
                    t_step_s=params.interval_s,
                    name=f"{name} {params.channel}",
                    channel=params.channel,
                    attributes={key: [r[key] for r in rows] for key in _STORED},
                )
            )
    return stores


@task(name="summarise-adaptive-illumination", cache_policy=NO_CACHE)
def summarise_adaptive_illumination(
    params: AdaptiveIlluminationParams,
    outcome: IlluminationOutcome,
    stores: list[Path],
    started: float,
) -> dict[str, Any]:
    """Frames, SNR reached (as the workers measured it), the edge's light dose, why positions
    stopped; the light-over-time and dose charts as artifacts."""
    with params.connect() as edge:
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        dose_now = edge.state().light_dose.used_mj
    per_position = frames_by_position(outcome.decisions_path)
    names = [p.name for p in params.positions]
    rows_all = [r for rows in per_position.values() for r in rows]
    measured = [r["snr"] for r in rows_all]
    reached = sum(1 for s in measured if s is not None and s >= params.target_snr)
    dose_frames = sum(_dose(envelope, params.channel, r) for r in rows_all)
    summary: dict[str, Any] = {
        "run_dir": str(outcome.run_dir),
        "positions": len(names),
        "frames": len(rows_all),
        "target_snr": params.target_snr,
        "snr_reached_fraction_measured": round(reached / len(rows_all), 4) if rows_all else None,
        "dose_mj": round(dose_now - outcome.dose_before_mj, 6),
        "dose_frames_mj": round(dose_frames, 6),
        "dose_budget_mj": envelope.light_dose_budget_mj,
        "dose_used_on_edge_mj": round(dose_now, 6),
        "capped": outcome.capped,
        "stopped": outcome.stopped,
        "fallback_decisions": outcome.loop["fallback_decisions"],
        "refused": outcome.loop["refused"],
        "stores": [str(s) for s in stores],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    table = [
        {
            "position": names[p],
            "frames": len(rows),
            "last_exposure_ms": rows[-1]["exposure_ms"] if rows else None,
            "last_intensity_percent": rows[-1]["intensity_percent"] if rows else None,
            "median_snr": _median([r["snr"] for r in rows]),
            "dose_mj": round(sum(_dose(envelope, params.channel, r) for r in rows), 4),
            "stopped": outcome.stopped.get(names[p]),
        }
        for p, rows in sorted(per_position.items())
    ]
    create_table_artifact(table, key="illumination-positions", description="Light per position")
    light_png = render_light_png(
        {names[p]: rows for p, rows in sorted(per_position.items())}, params.target_snr
    )
    dose_png = render_dose_png(
        {"adaptive": cumulative_dose(per_position, params.channel, envelope)}
    )
    for name, png, description in (
        ("light.png", light_png, "Light per frame and measured SNR, per position"),
        ("dose.png", dose_png, "Cumulative light dose of the run"),
    ):
        publish_png(
            png,
            key=f"illumination-{name.removesuffix('.png')}",
            description=description,
            path=outcome.run_dir / name,
        )
    publish_summary(
        "Adaptive illumination",
        summary,
        key="illumination-summary",
        description="Frames, SNR reached, light dose, stopped positions",
    )
    return summary


def cumulative_dose(
    per_position: dict[int, list[dict[str, Any]]], channel: str, envelope: SafetyEnvelope
) -> list[tuple[float, float]]:
    """(time point, dose in mJ up to and including it) over all positions."""
    per_t: dict[int, float] = {}
    for rows in per_position.values():
        for r in rows:
            per_t[r["t"]] = per_t.get(r["t"], 0.0) + _dose(envelope, channel, r)
    total, out = 0.0, []
    for t in sorted(per_t):
        total += per_t[t]
        out.append((float(t), total))
    return out


@flow(name="adaptive-illumination", log_prints=True)
def adaptive_illumination(params: AdaptiveIlluminationParams) -> dict[str, Any]:
    """Prepare -> illuminate (the live loop) -> store -> summarise."""
    started = time.perf_counter()
    params.compute_profile()  # an unknown profile fails here, before anything is illuminated
    with microscope_run(params, params.run_id or default_run_id("illum")) as run:
        first, dose_before = prepare_adaptive_illumination(params)
        backend = run.open_backend(params)
        outcome = illuminate(params, run.run_id, run.run_dir, first, dose_before, backend)
        stores = store_illumination(params, outcome)
    return summarise_adaptive_illumination(params, outcome, stores, started)


def _dose(envelope: SafetyEnvelope, channel: str, row: dict[str, Any]) -> float:
    return envelope.dose_mj(channel, row["exposure_ms"], row["intensity_percent"])


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.median(kept)), 2) if kept else None
