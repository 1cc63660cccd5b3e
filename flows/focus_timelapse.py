"""A time-lapse that keeps focus on a drifting sample: software autofocus before each time point.

Phases are Prefect tasks; the per-frame work is the closed-loop core (``tasks.live``) inside the
``keep-focus`` task: every focus frame goes to the workers as a reference, its sharpness
(``tasks.qc``'s normalised variance) comes back, and the pure ``AutofocusPolicy``
(``tasks.decisions``) decides the next sweep or the focus, then images the time point there,
with command ids made of the run, the position, the time point and the sweep round (a retry or
a re-run under the same ``run_id`` repeats no acquisition). The images are stored as OME-Zarr
(one (t, y, x) series per position and channel, each time point's z in the attributes); the
summary (frames per autofocus, focus z over time, and on the simulator the focus error
against the ground truth, against the static protocol that sets focus once) becomes artifacts.
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
from tasks.decisions import AutofocusPolicy, AutofocusState
from tasks.hardware import SafetyEnvelope
from tasks.live import DecisionLog, LoopSettings, run_edge_phase
from tasks.qc import QCWorkers
from tasks.storage import write_zstack

from ._artifacts import publish_png, publish_summary
from ._focus import autofocus_plan, focus_analyzer, focus_z_limits, open_focus_workers
from ._focus_params import FocusTimelapseParams
from ._focus_plots import render_focus_error_png
from ._microscope_run import microscope_run
from ._run_id import default_run_id

__all__ = ["FocusOutcome", "autofocus_timelapse", "image_records"]

PHASE = "focus"


@dataclass(frozen=True)
class FocusOutcome:
    """What the loop phase leaves for the next ones (small: paths and numbers)."""

    run_dir: Path
    decisions_path: Path
    loop: dict[str, Any]
    calls: dict[str, list[dict[str, Any]]]  # position -> one record per autofocus call


@task(name="prepare-autofocus", cache_policy=NO_CACHE)
def prepare_autofocus(params: FocusTimelapseParams) -> tuple[int, tuple[float, float]]:
    """Check the focus and imaging light, the positions and the sweeps' z range against the
    edge's envelope (a refusal stops the run here, before anything moves), switch the
    objective; returns the index the run's frames start from and the z limits of the sweeps."""
    with params.connect() as edge:
        edge.wait_until_idle()
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        try:
            limits = focus_z_limits(edge, params.autofocus)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        if envelope.allowed_objectives and params.objective not in envelope.allowed_objectives:
            raise ConfigurationError(
                f"objective {params.objective!r} is not allowed by the edge's envelope "
                f"({', '.join(sorted(envelope.allowed_objectives))}); choose one of those"
            )
        af = params.autofocus
        try:
            for channel, exposure in ((af.channel, af.exposure_ms), *params.imaging_plan()):
                envelope.check_channel(channel, "the autofocus time-lapse")
                envelope.check_exposure(exposure, "the autofocus time-lapse")
            for p in params.positions:
                envelope.check_position(p.x_um, p.y_um, params.start_z_um, f"position {p.name}")
        except EnvelopeViolation as exc:
            raise ConfigurationError(
                f"the edge's envelope forbids this time-lapse: {exc}; change the params file "
                "(nothing was acquired)"
            ) from exc
        edge.set_objective(params.objective)
        return edge.state().frames_journaled, limits


@task(name="keep-focus", cache_policy=NO_CACHE)
def keep_focus(
    params: FocusTimelapseParams,
    run_id: str,
    run_dir: Path,
    first_frame: int,
    z_limits_um: tuple[float, float],
    workers: QCWorkers | None,
) -> FocusOutcome:
    """The live loop: focus sweeps scored on the workers, each time point imaged at its focus."""
    plan = autofocus_plan(
        params.autofocus,
        [(p.name, p.x_um, p.y_um) for p in params.positions],
        z_limits_um,
        start_z_um=params.start_z_um,
        time_points=params.time_points,
        interval_s=params.interval_s,
        imaging=params.imaging_plan(),
    )
    decisions_path = run_dir / "decisions.jsonl"
    with params.connect() as edge:
        report = run_edge_phase(
            edge,
            focus_analyzer(workers, params.autofocus.deadline_ms, params.autofocus.region_um),
            AutofocusPolicy(plan),
            run_id=run_id,
            phase=PHASE,
            decisions_path=decisions_path,
            first_frame=first_frame,
            transport=params.transport,
            settings=LoopSettings(budget_ms=params.interval_s * 1e3),
        )
    state: AutofocusState = report.state
    create_markdown_artifact(
        f"# Loop latency, run {run_id}\n\n{report.markdown()}\n",
        key="autofocus-loop-latency",
        description="Frame ready -> decision -> command, split",
    )
    calls = {pos.name: list(pos.calls) for pos in state.positions}
    return FocusOutcome(run_dir, decisions_path, report.summary(), calls)


def image_records(decisions_path: Path) -> dict[int, list[dict[str, Any]]]:
    """Position -> its image frames' decision records (autofocus frames left out), in order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for record in DecisionLog.read(decisions_path):
        if record.get("type") != "decision" or record["event_index"].get("a", 0):
            continue
        out.setdefault(int(record["event_index"].get("p", 0)), []).append(record)
    return out


@task(name="store-focus-images", cache_policy=NO_CACHE)
def store_focus_images(params: FocusTimelapseParams, outcome: FocusOutcome) -> list[Path]:
    """One OME-Zarr (t, y, x) per position and imaging channel, each time point's z, sample
    time and edge frame in the store's attributes."""
    stores: list[Path] = []
    with params.connect() as edge:
        for p, records in sorted(image_records(outcome.decisions_path).items()):
            name = params.positions[p].name
            for c, channel in enumerate(params.imaging):
                rows = [r for r in records if int(r["event_index"].get("c", 0)) == c]
                if not rows:
                    continue
                frames = [edge.frame(r["frame"]) for r in rows]
                store = outcome.run_dir / "positions" / name / f"{channel.channel}.ome.zarr"
                store.parent.mkdir(parents=True, exist_ok=True)
                stores.append(
                    write_zstack(
                        store,
                        np.stack([f.pixels for f in frames]),
                        pixel_size_um=frames[0].header.pixel_size_um,
                        t_step_s=params.interval_s,
                        name=f"{name} {channel.channel}",
                        channel=channel.channel,
                        attributes={
                            "z_um": [r["stage"][2] for r in rows],
                            "time_points": [r["event_index"].get("t", 0) for r in rows],
                            "sample_time_s": [r["sample_time_s"] for r in rows],
                            "edge_frames": [r["frame"] for r in rows],
                        },
                    )
                )
    return stores


@task(name="summarise-autofocus", cache_policy=NO_CACHE)
def summarise_autofocus(
    params: FocusTimelapseParams, outcome: FocusOutcome, stores: list[Path], started: float
) -> dict[str, Any]:
    """Frames per autofocus call and the focus over time; on the simulator, the focus error
    against the ground truth for this run and for the static protocol (focus set once, at the
    first call's result, at the same instants); and the artifacts a person looks at."""
    dof = params.autofocus.optics.dof_um()
    frames = [c["frames"] for calls in outcome.calls.values() for c in calls if c["frames"]]
    per_position = image_records(outcome.decisions_path)
    with params.connect() as edge:
        simulated = edge.state().simulated
        truth = _truth_errors(edge, params, outcome, per_position) if simulated else None
    images = sum(len(v) for v in per_position.values())
    summary: dict[str, Any] = {
        "run_dir": str(outcome.run_dir),
        "positions": len(params.positions),
        "time_points": images // max(1, len(params.imaging)),
        "dof_um": round(dof, 3),
        "autofocus_calls": sum(len(c) for c in outcome.calls.values()),
        "frames_per_autofocus": {
            "mean": round(float(np.mean(frames)), 2) if frames else None,
            "max": int(max(frames)) if frames else None,
        },
        "autofocus_not_found": [
            {"position": name, "t": c["t"], "reason": c["reason"]}
            for name, calls in outcome.calls.items()
            for c in calls
            if not c["found"]
        ],
        "refused": outcome.loop["refused"],
        "fallback_decisions": outcome.loop["fallback_decisions"],
    }
    if truth is not None:
        summary.update(truth["summary"])
    summary["stores"] = [str(s) for s in stores]
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    rows = [
        {"position": name, "t": c["t"], "z_um": c["z_um"], "found": c["found"],
         "frames": c["frames"], "method": c["method"], "reason": c["reason"]}
        for name, calls in outcome.calls.items()
        for c in calls
    ]  # fmt: skip
    create_table_artifact(rows, key="autofocus-calls", description="Every autofocus call")
    if truth is not None:
        png = render_focus_error_png(truth["times"], truth["smart"], truth["static"], dof)
        description = "Focus error over time: autofocus (blue), static (red), depth of field"
    else:
        records = per_position.get(0, [])
        zs = [r["stage"][2] for r in records]
        png = render_focus_error_png(
            [r["sample_time_s"] or 0.0 for r in records], [z - zs[0] for z in zs], None, dof
        )
        description = "Focus z over time at the first position, relative to its first time point"
    publish_png(
        png,
        key="autofocus-focus-error",
        description=description,
        path=outcome.run_dir / "focus-error.png",
    )
    publish_summary(
        "Autofocus time-lapse",
        summary,
        key="autofocus-summary",
        description="Focus kept within the depth of field, against the static protocol",
    )
    return summary


def _truth_errors(
    edge: Any,
    params: FocusTimelapseParams,
    outcome: FocusOutcome,
    per_position: dict[int, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Focus error of every image frame against the simulator's in-focus z at its instant."""
    dof = params.autofocus.optics.dof_um()
    smart: list[float] = []
    static: list[float] = []
    times: list[float] = []
    first_plot: list[tuple[float, float, float]] = []
    for p, records in sorted(per_position.items()):
        pos = params.positions[p]
        calls = outcome.calls.get(pos.name, [])
        z_static = calls[0]["z_um"] if calls else params.start_z_um
        for r in records:
            if r["event_index"].get("c", 0):
                continue
            t = float(r["sample_time_s"])
            box = (pos.x_um - 1.0, pos.y_um - 1.0, pos.x_um + 1.0, pos.y_um + 1.0)
            focus = float(edge.truth(box, t)["focus_z_um"])
            smart.append(r["stage"][2] - focus)
            static.append(z_static - focus)
            times.append(t)
            if p == 0:
                first_plot.append((t, smart[-1], static[-1]))
    a_smart, a_static = np.abs(smart), np.abs(static)
    half = dof / 2

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 3) if a.size else None

    summary = {
        "in_dof_fraction": round(float(np.mean(a_smart <= half)), 4) if a_smart.size else None,
        "in_dof_fraction_static": round(float(np.mean(a_static <= half)), 4)
        if a_static.size
        else None,
        "focus_error_um": {"p50": pct(a_smart, 50), "p99": pct(a_smart, 99),
                           "mean": round(float(a_smart.mean()), 3) if a_smart.size else None},
        "focus_error_static_um": {"p50": pct(a_static, 50), "p99": pct(a_static, 99),
                                  "mean": round(float(a_static.mean()), 3)
                                  if a_static.size else None},
        "sample_minutes": round((max(times) - min(times)) / 60.0, 1) if times else 0.0,
    }  # fmt: skip
    return {
        "summary": summary,
        "times": [t for t, _, _ in first_plot],
        "smart": [s for _, s, _ in first_plot],
        "static": [s for _, _, s in first_plot],
    }


@flow(name="autofocus", log_prints=True)
def autofocus_timelapse(params: FocusTimelapseParams) -> dict[str, Any]:
    """Prepare -> keep focus (the live loop) -> store -> summarise."""
    started = time.perf_counter()
    with microscope_run(params, params.run_id or default_run_id("autofocus")) as run:
        first, limits = prepare_autofocus(params)
        workers = run.keep(open_focus_workers(params.autofocus))
        outcome = keep_focus(params, run.run_id, run.run_dir, first, limits, workers)
        stores = store_focus_images(params, outcome)
    return summarise_autofocus(params, outcome, stores, started)
