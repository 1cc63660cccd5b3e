"""Event-triggered protocol switching: watch gently, image each event fast, then go back.

Phases are Prefect tasks; the per-frame work is the closed-loop core (``tasks.live``) inside the
``watch`` task: the edge's frames go to the workers as references, a small object table comes
back, the pure ``EventTriggeredPolicy`` (``tasks.decisions``) runs the detectors on each
position's region of interest and sends that position's next time point in the gentle or the
fast protocol, with a command id made of the run, the position and the time point (a retry or a
re-run under the same ``run_id`` repeats no acquisition). Then each position's frames are stored
as OME-Zarr (one (t, y, x) series per mode stretch, channel and plane), and the summary (events,
light dose against an always-fast protocol, trigger latency) becomes artifacts.
"""

from __future__ import annotations

import re
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
from tasks.decisions import EventState, EventTriggeredPolicy, Policy
from tasks.hardware import SafetyEnvelope
from tasks.inference import InferenceBackend
from tasks.live import (
    DecisionLog,
    LoopSettings,
    SentCommand,
    run_edge_phase,
)
from tasks.storage import write_zstack

from ._artifacts import publish_png, publish_summary
from ._event_log import frames_by_position, trigger_latencies_ms
from ._event_params import EventTriggeredParams
from ._event_plots import render_timeline_png
from ._live_analysis import live_analyzer
from ._microscope_run import microscope_run
from ._run_id import default_run_id

__all__ = ["EventOutcome", "event_triggered", "trigger_latency_summary"]

PHASE = "event"


@dataclass(frozen=True)
class EventOutcome:
    """What the watch phase leaves for the next ones (small: paths and numbers)."""

    run_dir: Path
    decisions_path: Path
    loop: dict[str, Any]
    positions: list[dict[str, Any]]  # name, triggers, stop reason
    dose_before_mj: float


@task(name="prepare-event-triggered", cache_policy=NO_CACHE)
def prepare_event_triggered(params: EventTriggeredParams) -> tuple[int, float]:
    """Check both protocols and the positions against the edge's envelope (an envelope that
    forbids the fast protocol stops the run here, before anything moves), switch the objective;
    returns the index the run's frames start from and the edge's light dose so far."""
    with params.connect() as edge:
        edge.wait_until_idle()
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        if envelope.allowed_objectives and params.objective not in envelope.allowed_objectives:
            raise ConfigurationError(
                f"objective {params.objective!r} is not allowed by the edge's envelope "
                f"({', '.join(sorted(envelope.allowed_objectives))}); choose one of those"
            )
        policy = EventTriggeredPolicy(_positions(params), params.rules())
        for mode in ("gentle", "fast"):
            for event in policy.events_per_time_point(mode):
                try:
                    envelope.check_channel(event.channel.config, f"the {mode} protocol")
                    envelope.check_exposure(event.exposure or 0.0, f"the {mode} protocol")
                    for p in params.positions:
                        envelope.check_position(p.x_um, p.y_um, event.z_pos, f"position {p.name}")
                except EnvelopeViolation as exc:
                    raise ConfigurationError(
                        f"the edge's envelope forbids the {mode} protocol: {exc}; change the "
                        "params file (nothing was acquired)"
                    ) from exc
        edge.set_objective(params.objective)
        state = edge.state()
        return state.frames_journaled, state.light_dose.used_mj


@task(name="watch", cache_policy=NO_CACHE)
def watch(
    params: EventTriggeredParams,
    run_id: str,
    run_dir: Path,
    first_frame: int,
    dose_before_mj: float,
    backend: InferenceBackend | None,
    policy: Policy[Any] | None = None,
) -> EventOutcome:
    """The live loop: every time point's detection frame analysed and the next one chosen
    (``policy``: one that wraps the event-triggered policy, e.g. `StimulateOnEventPolicy`)."""
    if policy is None:
        policy = EventTriggeredPolicy(_positions(params), params.rules(), params.event_detectors())
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
            settings=LoopSettings(budget_ms=params.fast.interval_s * 1e3),
        )
    state: EventState = report.state
    refused = _refused_positions(report.refused)
    positions = [
        {"name": roi.name, "triggers": roi.triggers, "stopped": roi.stop_reason or refused.get(p)}
        for p, roi in enumerate(state.positions)
    ]
    create_markdown_artifact(
        f"# Loop latency, run {run_id}\n\n{report.markdown()}\n",
        key="event-loop-latency",
        description="Frame ready -> decision -> command, split",
    )
    return EventOutcome(run_dir, decisions_path, report.summary(), positions, dose_before_mj)


@task(name="store-events", cache_policy=NO_CACHE)
def store_events(params: EventTriggeredParams, outcome: EventOutcome) -> list[Path]:
    """One OME-Zarr (t, y, x) per position, mode stretch, channel and plane, from the edge's
    frames (their sample times and edge indices in the store's attributes)."""
    names = [p.name for p in params.positions]
    series: dict[tuple[int, int, str, int], list[dict[str, Any]]] = {}
    stretch: dict[int, int] = {}
    last_mode: dict[int, int] = {}
    for record in DecisionLog.read(outcome.decisions_path):
        if record.get("type") != "decision":
            continue
        index = record["event_index"]
        p, m = int(index.get("p", 0)), int(index.get("m", 0))
        if last_mode.get(p) != m:
            stretch[p] = stretch.get(p, -1) + 1
            last_mode[p] = m
        channel = _channel(params, index)
        series.setdefault((p, stretch[p], channel, int(index.get("z", 0))), []).append(record)
    stores: list[Path] = []
    with params.connect() as edge:
        for (p, k, channel, z), records in sorted(series.items()):
            frames = [edge.frame(r["frame"]) for r in records]
            fast = bool(records[0]["event_index"].get("m", 0))
            mode = "fast" if fast else "gentle"
            store = (
                outcome.run_dir / "positions" / names[p] / f"{k:03d}-{mode}-{channel}-z{z}.ome.zarr"
            )
            store.parent.mkdir(parents=True, exist_ok=True)
            stores.append(
                write_zstack(
                    store,
                    np.stack([f.pixels for f in frames]),
                    pixel_size_um=frames[0].header.pixel_size_um,
                    t_step_s=params.fast.interval_s if fast else params.gentle.interval_s,
                    name=f"{names[p]} {mode} {channel} z{z}",
                    channel=channel,
                    attributes={
                        "mode": mode,
                        "time_points": [r["event_index"].get("t", 0) for r in records],
                        "sample_time_s": [r["sample_time_s"] for r in records],
                        "edge_frames": [r["frame"] for r in records],
                    },
                )
            )
    return stores


@task(name="summarise-event-triggered", cache_policy=NO_CACHE)
def summarise_event_triggered(
    params: EventTriggeredParams, outcome: EventOutcome, stores: list[Path], started: float
) -> dict[str, Any]:
    """Time points per mode, light dose against the always-fast protocol, trigger latency,
    and the artifacts a person looks at."""
    policy = EventTriggeredPolicy(_positions(params), params.rules())
    with params.connect() as edge:
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        edge_state = edge.state()
    dose_now, intensity = edge_state.light_dose.used_mj, edge_state.intensity

    def dose(mode: str) -> float:
        return sum(
            envelope.dose_mj(e.channel.config, e.exposure or 0.0, intensity)
            for e in policy.events_per_time_point(mode)  # type: ignore[arg-type]
        )

    per_position = frames_by_position(outcome.decisions_path)
    fast_tp = sum(sum(1 for _, m, _ in rows if m) for rows in per_position.values())
    gentle_tp = sum(sum(1 for _, m, _ in rows if not m) for rows in per_position.values())
    steps_fast = int(params.duration_s // params.fast.interval_s) + 1
    steps_gentle = int(params.duration_s // params.gentle.interval_s) + 1
    n = len(params.positions)
    always_fast = n * steps_fast * dose("fast")
    measured = dose_now - outcome.dose_before_mj
    latencies = trigger_latencies_ms(outcome.decisions_path)
    rows = [
        {
            "position": p["name"],
            "triggers": len(p["triggers"]),
            "fast_time_points": sum(1 for _, m, _ in per_position.get(i, []) if m),
            "gentle_time_points": sum(1 for _, m, _ in per_position.get(i, []) if not m),
            "stopped": p["stopped"],
        }
        for i, p in enumerate(outcome.positions)
    ]
    summary = {
        "run_dir": str(outcome.run_dir),
        "positions": n,
        "triggers": sum(len(p["triggers"]) for p in outcome.positions),
        "time_points_gentle": gentle_tp,
        "time_points_fast": fast_tp,
        "dose_mj": round(measured, 3),
        "dose_frames_mj": round(gentle_tp * dose("gentle") + fast_tp * dose("fast"), 3),
        "dose_always_fast_mj": round(always_fast, 3),
        "dose_always_gentle_mj": round(n * steps_gentle * dose("gentle"), 3),
        "dose_ratio": round(measured / always_fast, 4) if always_fast else None,
        "trigger_latency_ms": trigger_latency_summary(latencies),
        "stopped": {p["name"]: p["stopped"] for p in outcome.positions if p["stopped"]},
        "fallback_decisions": outcome.loop["fallback_decisions"],
        "refused": outcome.loop["refused"],
        "stores": [str(s) for s in stores],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    create_table_artifact(rows, key="event-positions", description="Triggers per position")
    png = render_timeline_png(
        {p["name"]: per_position.get(i, []) for i, p in enumerate(outcome.positions)}
    )
    publish_png(
        png,
        key="event-timeline",
        description="Gentle (grey) and fast (red) time points per position",
        path=outcome.run_dir / "timeline.png",
    )
    publish_summary(
        "Event-triggered imaging",
        summary,
        key="event-summary",
        description="Events, light dose against always-fast, trigger latency",
    )
    return summary


@flow(name="event-triggered", log_prints=True)
def event_triggered(params: EventTriggeredParams) -> dict[str, Any]:
    """Prepare -> watch (the live loop) -> store -> summarise."""
    started = time.perf_counter()
    params.compute_profile()  # an unknown profile fails here, before the microscope moves
    params.event_detectors()  # so does a detector that cannot load
    with microscope_run(params, params.run_id or default_run_id("event")) as run:
        first, dose_before = prepare_event_triggered(params)
        backend = run.open_backend(params)
        outcome = watch(params, run.run_id, run.run_dir, first, dose_before, backend)
        stores = store_events(params, outcome)
    return summarise_event_triggered(params, outcome, stores, started)


def trigger_latency_summary(latencies: list[dict[str, float]]) -> dict[str, Any]:
    """``p50``/``p99``: trigger frame ready -> first fast frame ready, beyond the model's time
    on the trigger frame (ms); ``total_*`` with the model's time; ``model_p50``; ``n``."""
    if not latencies:
        return {"p50": None, "p99": None, "n": 0}

    def q(part: str, pct: float) -> float:
        return round(float(np.percentile([r[part] for r in latencies], pct)), 1)

    return {
        "p50": q("beyond_model", 50),
        "p99": q("beyond_model", 99),
        "n": len(latencies),
        "total_p50": q("total", 50),
        "total_p99": q("total", 99),
        "model_p50": q("model", 50),
        "measure": "trigger frame ready -> first fast frame ready, less the model's time",
    }


def _refused_positions(refused: list[SentCommand]) -> dict[int, str]:
    """Position -> why the edge refused its first refused time point (e.g. the light dose
    budget ran out: that position's branch ends there, its frames so far are kept)."""
    out: dict[int, str] = {}
    for sent in refused:
        key = re.search(r"p(\d+)-t(\d+)$", sent.command_id)
        if key is not None:
            p, t = int(key.group(1)), int(key.group(2))
            out.setdefault(p, f"the edge refused time point {t}: {sent.refused}")
    return out


def _positions(params: EventTriggeredParams) -> list[tuple[str, float, float]]:
    return [(p.name, p.x_um, p.y_um) for p in params.positions]


def _channel(params: EventTriggeredParams, index: dict[str, int]) -> str:
    if not index.get("m", 0):
        return params.gentle.channel
    return params.fast.channels[int(index.get("c", 0))].channel
