"""Object tracking: follow cells at several positions, re-centring the stage every time point.

Phases are Prefect tasks; the per-frame work is the closed-loop core (``tasks.live``) inside the
``track`` task: the edge's frames go to the workers as references, a small object table comes
back, the tracking policy links objects over time (laptrack) and sends the next time point's
acquisition at the re-centred position, with a command id made of the run, the time point and
the position (a retry or a re-run under the same ``run_id`` repeats no move). Then each
position's frames are stored as an OME-Zarr (t, y, x) and its tracks as Cell Tracking
Challenge RES (masks + lineage), and the summary becomes artifacts.

With ``positions: from_overview`` the positions come from targeted imaging's overview phase,
run first in this flow with its own tasks (``plan-overview``, ``segment-overview`` on the same
workers, ``decide-targets``), and the trajectories are drawn over that overview's mosaic.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from scopeflow import ConfigurationError
from tasks.decisions import (
    Detection,
    FocusedTrackingPolicy,
    LinkerSettings,
    RefocusRules,
    TrackingPolicy,
    TrackingRules,
    TrackingState,
)
from tasks.inference import (
    BackendConfig,
    InferenceBackend,
    SegmentationModel,
    load_model,
)
from tasks.live import (
    DecisionLog,
    LoopSettings,
    RoutedAnalyzer,
    route_by_index,
    run_edge_phase,
)
from tasks.qc import QCWorkers
from tasks.storage import write_ctc_result, write_zstack

from ._acquisition_report import reports_acquisition
from ._artifacts import publish_png, publish_summary
from ._focus import focus_analyzer, open_focus_workers
from ._focus_step import check_autofocus, focus_errors_um, focus_here, simulated_dof_um
from ._live_analysis import live_analyzer, local_model, where_analysis_ran
from ._microscope_run import microscope_run
from ._run_id import default_run_id
from ._targeted_params import TargetedImagingParams
from ._tracking_params import TrackedPosition, TrackingParams
from ._tracking_plots import (
    render_centring_error_png,
    render_paths_over_mosaic_png,
    render_paths_png,
)
from .targeted_imaging import decide_targets, plan_overview, segment_overview

__all__ = ["TrackingOutcome", "tracking"]

PHASE = "track"


@dataclass(frozen=True)
class TrackingOutcome:
    """What the track phase leaves for the next ones (small: paths and numbers)."""

    run_dir: Path
    tracks_path: Path
    decisions_path: Path
    loop: dict[str, Any]
    analysis: dict[str, Any]  # where the model ran: engine, compute profile, workers
    mosaic_path: Path | None = None  # the overview the positions came from, if any
    focus: tuple[dict[str, Any], ...] = ()  # each position's autofocus call, if any
    refocus: tuple[dict[str, Any], ...] = ()  # the loop's own autofocus calls (autofocus.every)


@task(name="prepare-tracking", cache_policy=NO_CACHE)
def prepare_tracking(params: TrackingParams) -> int:
    """Check the positions and objective against the edge's envelope, switch the objective;
    returns the index the run's frames start from."""
    with params.connect() as edge:
        edge.wait_until_idle()
        envelope = edge.info()["envelope"]
        allowed = envelope.get("allowed_objectives")
        if allowed and params.objective not in allowed:
            raise ConfigurationError(
                f"objective {params.objective!r} is not allowed by the edge's envelope "
                f"({', '.join(sorted(allowed))}); choose one of those in the params file"
            )
        (x0, x1), (y0, y1) = envelope["x_limits_um"], envelope["y_limits_um"]
        for p in params.tracked_positions():
            if not (x0 <= p.x_um <= x1 and y0 <= p.y_um <= y1):
                raise ConfigurationError(
                    f"position {p.name!r} ({p.x_um:g}, {p.y_um:g}) µm is outside the edge's "
                    f"stage limits x {x0:g}..{x1:g}, y {y0:g}..{y1:g}; fix it in the params file"
                )
        edge.set_objective(params.objective)
        return edge.state().frames_journaled


@task(name="focus-positions", cache_policy=NO_CACHE)
def focus_positions(
    params: TrackingParams, run_id: str, run_dir: Path, workers: QCWorkers | None
) -> list[dict[str, Any]]:
    """Each position's focus before its first time point: one autofocus call per position
    (loop phase ``focus-p<position>``), the search centred on the last focus found (first:
    ``z_um``); a position where none is found is tracked at that centre (its record says why)."""
    assert params.autofocus is not None
    records: list[dict[str, Any]] = []
    z = params.z_um
    with params.connect() as edge:
        for p, position in enumerate(params.tracked_positions()):
            record = focus_here(
                edge, workers, params.autofocus, x_um=position.x_um, y_um=position.y_um,
                z_um=z, run_id=run_id, phase=f"focus-p{p:03d}", log_dir=run_dir / "focus",
            )  # fmt: skip
            records.append({"position": position.name, **record})
            z = record["z_um"] if record["found"] else z
    print(
        "autofocus: "
        + ", ".join(f"{r['position']} z {r['z_um']:.2f} µm ({r['frames']} frames)" for r in records)
    )
    return records


@task(name="track", cache_policy=NO_CACHE)
def track_cells(
    params: TrackingParams,
    run_id: str,
    run_dir: Path,
    first_frame: int,
    backend: InferenceBackend | None,
    focus: list[dict[str, Any]] | None = None,
    focus_workers: QCWorkers | None = None,
    z_limits_um: tuple[float, float] | None = None,
) -> TrackingOutcome:
    """The live loop: every frame analysed, linked, and the next one re-centred (each position
    at its focus when ``focus`` gives one; with autofocus ``every`` k > 0, every k-th time
    point re-focused first, its sweep frames scored on ``focus_workers``)."""
    rules = TrackingRules(
        time_points=params.time_points,
        interval_s=params.interval_s,
        channel=params.channel,
        exposure_ms=params.exposure_ms,
        z_um=params.z_um,
        deadband_um=params.deadband_um,
        max_step_um=params.max_step_um,
        on_lost=params.on_lost,
        linker=LinkerSettings(
            max_step=params.link_distance_um, max_split=2 * params.link_distance_um
        ),
    )
    positions = params.tracked_positions()
    policy = TrackingPolicy(
        [(p.name, p.x_um, p.y_um) for p in positions],
        rules,
        z_um=[r["z_um"] for r in focus] if focus else None,
    )
    analysis = where_analysis_ran(params, backend)
    analyzer: Any = live_analyzer(params, backend)
    af = params.autofocus
    if af is not None and af.every > 0 and z_limits_um is not None:
        rules_af = af.rules(z_limits_um)
        refocus = RefocusRules(rules_af, af.every, af.method, af.channel, af.exposure_ms)
        policy = FocusedTrackingPolicy(policy, refocus)
        analyzer = RoutedAnalyzer(
            {
                "track": analyzer,
                "focus": focus_analyzer(focus_workers, af.deadline_ms, af.region_um),
            },
            route_by_index("a", "focus", "track"),
            primary="track",
        )
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
    state = report.state
    refocused: list[dict[str, Any]] = []
    if isinstance(policy, FocusedTrackingPolicy):
        refocused = [
            {"position": p.name, **call}
            for p, f in zip(positions, state.focus, strict=True)
            for call in f.calls
        ]
        state = state.tracking
    tracks_path = run_dir / "tracks.json"
    tracks_path.write_text(json.dumps(_tracks_document(state), indent=1))
    create_markdown_artifact(
        f"# Loop latency, run {run_id}\n\n{report.markdown()}\n",
        key="tracking-loop-latency",
        description="Frame ready -> decision -> command, split",
    )
    return TrackingOutcome(
        run_dir,
        tracks_path,
        decisions_path,
        report.summary(),
        analysis,
        focus=tuple(focus or ()),
        refocus=tuple(refocused),
    )


@task(name="store-tracks", cache_policy=NO_CACHE)
def store_tracks(
    params: TrackingParams, outcome: TrackingOutcome, backend: InferenceBackend | None
) -> list[Path]:
    """One OME-Zarr (t, y, x) per position from the edge's frames, and its tracks as CTC RES
    (masks re-made by the model that analysed each frame in the loop, on the same workers,
    relabelled with the track ids)."""
    tracks = json.loads(outcome.tracks_path.read_text())
    frames, where = _frames_by_position(outcome.decisions_path)
    fallback, fallback_options = local_model(params)
    local = load_model(fallback, **fallback_options) if fallback is not None else None
    stores: list[Path] = []
    with params.connect() as edge:
        for p, position in enumerate(tracks["positions"]):
            indices = frames.get(p, {})
            if not indices:
                continue
            times = sorted(indices)
            frames_here = [edge.frame(indices[t]) for t in times]
            pixels = [f.pixels for f in frames_here]
            pixel_size = frames_here[0].header.pixel_size_um
            store = outcome.run_dir / "positions" / f"{position['name']}.ome.zarr"
            store.parent.mkdir(parents=True, exist_ok=True)
            stores.append(
                write_zstack(
                    store,
                    np.stack(pixels),
                    pixel_size_um=pixel_size,
                    t_step_s=params.interval_s,
                    name=position["name"],
                    channel=params.channel,
                    attributes={"time_points": times, "edge_frames": [indices[t] for t in times]},
                )
            )
            labels = _segment_as_in_the_loop(
                [where[indices[t]] for t in times], pixels, pixel_size, backend, local
            )
            masks = [
                _relabel(lab, position["label_tracks"].get(str(t), {}))
                for t, lab in zip(times, labels, strict=True)
            ]
            write_ctc_result(
                outcome.run_dir / "ctc" / position["name"],
                masks,
                [tuple(row) for row in position["lineage"]],
            )
    return stores


@task(name="summarise-tracking", cache_policy=NO_CACHE)
def summarise_tracking(
    params: TrackingParams, outcome: TrackingOutcome, stores: list[Path], started: float
) -> dict[str, Any]:
    """Counts, centring, latency, and the artifacts a person looks at."""
    tracks = json.loads(outcome.tracks_path.read_text())
    fov_um = None
    rows = []
    centred = total = divisions = 0
    for position in tracks["positions"]:
        errors = {int(t): e for t, e in position["centring_error_um"].items()}
        fov_um = position.get("fov_um") or fov_um
        limit = 0.1 * (fov_um or np.inf)
        centred += sum(e <= limit for e in errors.values())
        total += params.time_points
        divisions += position["divisions_followed"]
        rows.append(
            {
                "position": position["name"],
                "tracks": len(position["lineage"]),
                "followed": position["followed"],
                "divisions_followed": position["divisions_followed"],
                "centring_error_um_p50": round(float(np.median(list(errors.values()))), 2)
                if errors
                else None,
                "dropped": position["dropped"],
            }
        )
    latency = outcome.loop["latency_ms"].get("loop", {})  # frame ready -> command sent
    waiting = outcome.loop["latency_ms"].get("waiting", {})  # behind earlier frames
    summary = {
        "run_dir": str(outcome.run_dir),
        "time_points": params.time_points,
        "positions": len(params.tracked_positions()),
        "tracked_cells": sum(len(p["lineage"]) for p in tracks["positions"]),
        "centred_fraction": round(centred / total, 4) if total else 0.0,
        "divisions_followed": divisions,
        "fallback_decisions": outcome.loop["fallback_decisions"],
        "analysis": outcome.analysis,
        "loop_latency_ms": {k: round(v, 2) for k, v in latency.items()},
        "queueing_ms": {k: round(v, 2) for k, v in waiting.items()},
        "refused": outcome.loop["refused"],
        "resumed": _resumed(outcome),
        "autofocus": list(outcome.focus) or None,
        "refocus": _refocus_summary(outcome.refocus) if params.autofocus else None,
        "stores": [str(s) for s in stores],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    create_table_artifact(rows, key="tracking-tracks", description="Tracks per position")
    frames, _ = _frames_by_position(outcome.decisions_path)
    with params.connect() as edge:
        if edge.state().simulated:
            summary["focus_error_um"] = focus_errors_um(
                edge, _focus_samples(outcome.decisions_path), _dof_um(params)
            )
        last = {
            position["name"]: edge.frame(frames[p][max(frames[p])])
            for p, position in enumerate(tracks["positions"])
            if frames.get(p)
        }
    if outcome.mosaic_path is not None:
        trajectories = render_paths_over_mosaic_png(tracks["positions"], outcome.mosaic_path)
        where = "over the overview mosaic the positions were found in (stage coordinates)"
    else:
        trajectories = render_paths_png(tracks["positions"], last)
        where = "over its position's last frame"
    for name, png, description in (
        ("trajectories", trajectories, f"Each followed cell's path {where}"),
        (
            "centring-error",
            render_centring_error_png(tracks["positions"], 0.1 * (fov_um or 0.0)),
            "Centring error per time point; dashed: 10 % of the field of view",
        ),
    ):
        publish_png(
            png,
            key=f"tracking-{name}",
            description=description,
            path=outcome.run_dir / f"{name}.png",
        )
    publish_summary("Tracking", summary, key="tracking-summary", description="Tracking summary")
    return summary


@flow(name="tracking", log_prints=True)
@reports_acquisition("tracking", stores=lambda summary: summary["stores"])
def tracking(params: TrackingParams) -> dict[str, Any]:
    """Prepare -> track (the live loop) -> store -> summarise."""
    started = time.perf_counter()
    params.compute_profile()  # an unknown profile fails here, before the microscope moves
    mosaic = None
    with microscope_run(params, params.run_id or default_run_id("track")) as run:
        run_id, run_dir = run.run_id, run.run_dir
        limits = None
        if params.autofocus is not None:  # bad focus settings stop the run before any move
            limits = check_autofocus(run.edge, params.autofocus, params.z_um, "tracking")
        if params.positions == "from_overview":  # the workers segment the overview too
            backend = run.open_backend(params)
            if backend is None:  # the params' validator asks for backend or profile
                raise ConfigurationError("positions: from_overview needs `backend` or `profile`")
            params, mosaic = _positions_from_overview(params, backend, run_id, run_dir)
            first = prepare_tracking(params)
        else:  # positions checked before any worker starts
            first = prepare_tracking(params)
            backend = run.open_backend(params)
        focus = workers = None
        if params.autofocus is not None:  # the focus workers: opened once, for every position
            workers = run.keep(open_focus_workers(params.autofocus))
            focus = focus_positions(params, run_id, run_dir, workers)
        outcome = track_cells(params, run_id, run_dir, first, backend, focus, workers, limits)
        outcome = replace(outcome, mosaic_path=mosaic)
        stores = store_tracks(params, outcome, backend)
    return summarise_tracking(params, outcome, stores, started)


def _positions_from_overview(
    params: TrackingParams, backend: InferenceBackend, run_id: str, run_dir: Path
) -> tuple[TrackingParams, Path]:
    """Targeted imaging's overview phase (its own tasks, on this run's workers): the cells
    its rules keep become the positions, ``cells`` of them, far enough apart. Returns the
    params with those positions, and the overview mosaic."""
    scan = params.overview
    assert scan is not None  # the params' validator
    overview_params = TargetedImagingParams(
        region=scan.region,
        overview=scan.overview,
        rules=scan.rules,
        model=params.model,
        backend=params.backend or BackendConfig(),
        profile=params.profile,
        edge_url=params.edge_url,
        edge_token_file=params.edge_token_file,
        edge_ca_file=params.edge_ca_file,
        microscope=params.microscope,
        transport=params.transport,
        output_dir=params.output_dir,
        focus_z_um=params.z_um,
        score_against_truth=False,
    )
    plan = plan_overview(overview_params)
    found = segment_overview(overview_params, plan, backend, run_id, run_dir)
    targets = decide_targets(overview_params, found.detections)
    chosen = _far_apart(targets, scan.cells, scan.min_separation_um)
    if not chosen:
        raise ConfigurationError(
            f"the overview of {scan.region.as_tuple()} found {len(found.detections)} objects "
            f"and none passed the rules ({scan.rules.model_dump()}); widen the region or relax "
            "`overview.rules`"
        )
    positions = [
        TrackedPosition(name=f"cell-{k}", x_um=round(t.x_um, 3), y_um=round(t.y_um, 3))
        for k, t in enumerate(chosen)
    ]
    print(
        f"overview: {len(found.detections)} objects, {len(targets)} targets; following "
        f"{len(positions)}: "
        + ", ".join(f"{p.name} ({p.x_um:.1f}, {p.y_um:.1f})" for p in positions)
    )
    return params.model_copy(update={"positions": positions}), found.mosaic_path


def _far_apart(targets: list[Detection], count: int, separation_um: float) -> list[Detection]:
    """Up to ``count`` targets in their order, each ``separation_um`` from those before it."""
    chosen: list[Detection] = []
    for t in targets:
        if all(np.hypot(t.x_um - c.x_um, t.y_um - c.y_um) >= separation_um for c in chosen):
            chosen.append(t)
        if len(chosen) == count:
            break
    return chosen


def _focus_samples(decisions: Path) -> list[tuple[float, float, float, float]]:
    """(x, y, z, sample time) of every tracked frame, from the decision log."""
    return [
        (*r["stage"], float(r["sample_time_s"]))
        for r in DecisionLog.read(decisions)
        if r.get("type") == "decision"
        and r.get("sample_time_s") is not None
        and not r["event_index"].get("a", 0)
    ]


def _refocus_summary(calls: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The loop's own autofocus calls: how many, how many found focus, frames per call."""
    frames = [c["frames"] for c in calls]
    return {
        "calls": len(calls),
        "found": sum(bool(c["found"]) for c in calls),
        "frames_mean": round(float(np.mean(frames)), 2) if frames else None,
        "frames_max": max(frames) if frames else None,
    }


def _dof_um(params: TrackingParams) -> float | None:
    """The depth of field the focus error is judged by: the autofocus optics', else the
    simulator's objective of ``params.objective`` (None for a name without a magnification)."""
    if params.autofocus is not None:
        return params.autofocus.optics.dof_um()
    return simulated_dof_um(params.objective, params.channel)


def _resumed(outcome: TrackingOutcome) -> dict[str, int]:
    """Provenance of a run that was resumed after a crash: how often, and how many of the
    commands its replay sent were repeats the edge recognised (nothing ran twice)."""
    records = DecisionLog.read(outcome.decisions_path)
    return {
        "times": sum(r.get("type") == "resume" for r in records),
        "commands_repeated": outcome.loop["repeats"],
    }


def _segment_as_in_the_loop(
    where: list[str],
    pixels: list[np.ndarray],
    pixel_size: float,
    backend: InferenceBackend | None,
    local: SegmentationModel | None,
) -> list[np.ndarray]:
    """Labels of each frame from the model that analysed it: the workers' for ``remote``,
    this process's for ``local``."""
    remote = [i for i, w in enumerate(where) if w == "remote"]
    out: list[np.ndarray] = [np.zeros(0)] * len(pixels)
    if remote:
        if backend is None:
            raise ConfigurationError("frames were analysed remotely but no backend is open")
        for i, lab in zip(
            remote,
            backend.segment([pixels[i] for i in remote], pixel_size_um=pixel_size),
            strict=True,
        ):
            out[i] = lab
    for i, w in enumerate(where):
        if w == "local":
            if local is None:
                raise ConfigurationError("frames were analysed locally but no local model is set")
            out[i] = local.segment(pixels[i], pixel_size_um=pixel_size)
    return out


def _tracks_document(state: TrackingState) -> dict[str, Any]:
    return {
        "positions": [
            {
                "name": pos.name,
                "followed": pos.followed,
                "dropped": pos.dropped,
                "divisions_followed": pos.divisions_followed,
                "lineage": pos.linker.lineage(),
                "label_tracks": {str(t): m for t, m in pos.label_tracks.items()},
                "centring_error_um": {str(t): e for t, e in pos.centring_error_um.items()},
                "path": {str(t): xy for t, xy in pos.path.items()},
                "fov_um": pos.fov_um,
            }
            for pos in state.positions
        ]
    }


def _frames_by_position(decisions: Path) -> tuple[dict[int, dict[int, int]], dict[int, str]]:
    """position -> time point -> edge frame index, and where each frame was analysed
    (``remote`` / ``local``), from the decision log (autofocus frames left out)."""
    out: dict[int, dict[int, int]] = {}
    where: dict[int, str] = {}
    for record in DecisionLog.read(decisions):
        if record.get("type") == "decision" and not record["event_index"].get("a", 0):
            index = record["event_index"]
            out.setdefault(int(index.get("p", 0)), {})[int(index.get("t", 0))] = record["frame"]
            where[record["frame"]] = record["analysed"]
    return out, where


def _relabel(labels: np.ndarray, mapping: dict[str, int]) -> np.ndarray:
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.uint16)
    for label, track in mapping.items():
        if int(label) < lut.size:
            lut[int(label)] = track
    return lut[labels]
