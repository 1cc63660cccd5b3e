"""Targeted imaging: scan an overview, find the nuclei, image each one at high magnification.

Control plane: one Prefect task per phase (overview, segmentation, decision, detail acquisition,
storage, summary). Data plane: frames go from the edge's stream straight to Ray/Dask workers
inside the segmentation task; Prefect only sees small results (detections, targets, paths).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import useq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from scopeflow import CommandDone, EventFailed, Frame, FrameHeader
from tasks.decisions import (
    Detection,
    FrameGeometry,
    OverviewPolicy,
    choose_targets,
    path_length_um,
    tile_grid,
)
from tasks.hardware import EdgeClient, Transport
from tasks.inference import InferenceBackend, backend_for_profile, make_backend
from tasks.live import (
    DecisionLog,
    analyzer_for,
    command_id,
    run_edge_phase,
)
from tasks.storage import write_zstack

from ._acquisition_report import reports_acquisition
from ._focus import open_focus_workers
from ._focus_step import check_autofocus
from ._microscope_run import microscope_run
from ._targeted_focus import focus_and_acquire_details
from ._targeted_params import DetailSettings, TargetedImagingParams
from ._targeted_summary import RunRecord, summarise

__all__ = [
    "OverviewPlan",
    "TargetedRun",
    "detail_stacks",
    "focus_and_acquire_details",
    "targeted_imaging",
]


class TargetedRun(Protocol):
    """What the overview and detail phases need of a flow's parameters (targeted imaging's,
    or a plate screen's, which runs the same phases per well)."""

    def connect(self) -> EdgeClient: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def detail(self) -> DetailSettings: ...
    @property
    def focus_z_um(self) -> float: ...


@dataclass(frozen=True)
class OverviewPlan:
    """Where the overview tiles are, and the frame geometry at the overview objective."""

    tiles: list[tuple[float, float]]
    width: int
    height: int
    affine: tuple[float, float, float, float, float, float]
    events: list[useq.MDAEvent]


@dataclass
class OverviewResult:
    detections: list[Detection]
    mosaic_path: Path
    first_frame: int
    loop_latency_ms: list[float] = field(default_factory=list)  # per tile, queueing excluded
    queueing_ms: list[float] = field(default_factory=list)  # per tile, behind earlier tiles


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside Prefect, the module's logger when a task runs on its own."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(name="plan-overview", cache_policy=NO_CACHE)
def plan_overview(params: TargetedImagingParams) -> OverviewPlan:
    """Switch to the overview objective and lay the tiles over the region."""
    ov = params.overview
    with params.connect() as edge:
        edge.wait_until_idle()
        edge.set_objective(ov.objective)
        state = edge.state()
    geometry = FrameGeometry(0, 0, state.image_width, state.image_height, state.pixel_affine)
    x0, y0, x1, y1 = geometry.extent_um
    tiles = tile_grid(params.region.as_tuple(), (x1 - x0, y1 - y0), ov.overlap)
    events = [
        useq.MDAEvent(
            x_pos=x,
            y_pos=y,
            z_pos=params.focus_z_um,
            channel=ov.channel,
            exposure=ov.exposure_ms,
            index={"p": i},
        )
        for i, (x, y) in enumerate(tiles)
    ]
    _log().info("overview: %d tiles at %s", len(tiles), ov.objective)
    return OverviewPlan(tiles, state.image_width, state.image_height, state.pixel_affine, events)


@task(name="segment-overview", cache_policy=NO_CACHE)
def segment_overview(
    params: TargetedRun,
    plan: OverviewPlan,
    backend: InferenceBackend,
    run_id: str,
    run_dir: Path,
    *,
    mosaic: bool = True,
) -> OverviewResult:
    """The closed loop over the overview: the tiles are acquired under this run's command id,
    streamed to the workers as they arrive (references on the edge's host), and the objects
    that come back become detections in stage coordinates. ``mosaic``: save the tiles binned
    side by side (a plate's fields are too far apart for one mosaic)."""
    policy = OverviewPolicy(plan.events)
    decisions_path = run_dir / "overview-decisions.jsonl"
    with params.connect() as edge:
        report = run_edge_phase(
            edge,
            analyzer_for(backend),
            policy,
            run_id=run_id,
            phase="overview",
            decisions_path=decisions_path,
            first_frame=edge.state().frames_journaled,
            transport=params.transport,
        )
        records = DecisionLog.read(decisions_path)
        first_frame = next(int(r["first_frame"]) for r in records if r.get("type") == "start")
        frames = [r["frame"] for r in records if r.get("type") == "decision"]
        mosaic_path = run_dir / "overview_mosaic.npz"
        if mosaic:
            _save_mosaic(edge, frames, plan, mosaic_path)
    state = report.state
    create_markdown_artifact(
        f"# Overview loop, run {run_id}\n\n{report.markdown()}\n",
        key="targeted-imaging-loop-latency",
        description="Tile ready -> objects back -> detections, split",
    )
    _log().info("segmented %d tiles: %d detections", len(frames), len(state.detections))
    return OverviewResult(
        state.detections,
        mosaic_path,
        first_frame,
        list(report.latency["loop"]),
        list(report.latency["waiting"]),
    )


def _save_mosaic(
    edge: EdgeClient, frames: list[int], plan: OverviewPlan, path: Path, factor: int = 8
) -> Path:
    """Each tile binned ``factor`` x ``factor`` (block mean: cells stay visible, noise drops)."""
    thumbs, centres = [], []
    for index in frames:
        frame = edge.frame(index)
        h, w = (d - d % factor for d in frame.pixels.shape)
        block = frame.pixels[:h, :w].reshape(h // factor, factor, w // factor, factor)
        thumbs.append(block.mean(axis=(1, 3), dtype=np.float32))
        centres.append((frame.header.stage.x, frame.header.stage.y))
    np.savez_compressed(
        path,
        thumbs=np.stack(thumbs),
        centres=np.array(centres),
        affine=np.array(plan.affine),
        shape=np.array([plan.height, plan.width]),
    )
    return path


@task(name="decide-targets", cache_policy=NO_CACHE)
def decide_targets(params: TargetedImagingParams, detections: list[Detection]) -> list[Detection]:
    """Merge tile overlaps, keep what the rules allow, order for short stage travel."""
    targets = choose_targets(detections, params.rules, params.region.contains)
    _log().info("%d detections -> %d targets", len(detections), len(targets))
    return targets


@task(name="post-detail-acquisitions", cache_policy=NO_CACHE)
def post_detail_acquisitions(
    params: TargetedRun, targets: list[Detection], run_id: str
) -> tuple[str, float]:
    """Send a z-stack per target under this run's command id; returns the id and the pixel size.

    A target outside the edge's safety envelope makes the edge refuse the whole command: the
    task fails with the edge's reason (which limit, which value) and nothing is acquired. A
    retried task sends the same id, which the edge runs once.
    """
    det = params.detail
    offsets = det.z_offsets()
    events = [
        useq.MDAEvent(
            x_pos=t.x_um,
            y_pos=t.y_um,
            z_pos=params.focus_z_um + dz,
            channel=det.channel,
            exposure=det.exposure_ms,
            index={"p": p, "z": k},
        )
        for p, t in enumerate(targets)
        for k, dz in enumerate(offsets)
    ]
    detail_id = command_id(run_id, "detail", "stacks")
    with params.connect() as edge:
        edge.wait_until_idle()
        edge.set_objective(det.objective, command_id=command_id(run_id, "detail", "objective"))
        pixel_size = edge.state().pixel_size_um
        if events:
            edge.submit_events(events, command_id=detail_id)
    return detail_id, pixel_size


@task(name="store-detail-stacks", cache_policy=NO_CACHE)
def store_detail_stacks(
    params: TargetedImagingParams,
    targets: list[Detection],
    detail_id: str | list[str],
    first_frame: int,
    run_dir: Path,
    focus: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Stream this run's detail frames back (by command id: one for all stacks, or one per
    stack, until the edge says each is done) and write one OME-Zarr z-stack per target, its
    focus plane (stage z, sample time, edge frame) and autofocus record in the attributes; a
    target whose stack lost an event to a device failure is logged and not stored incomplete."""
    offsets = params.detail.z_offsets()
    per_target = len(offsets)
    centre = min(range(per_target), key=lambda k: abs(offsets[k]))
    stores: list[Path] = []
    if not targets:
        return stores
    out = run_dir / "targets"
    out.mkdir(parents=True, exist_ok=True)
    with params.connect() as edge:
        for target, stack, h, indices in detail_stacks(
            edge, detail_id, first_frame, per_target, params.transport
        ):
            plane = edge.frame(indices[centre]).header
            attributes: dict[str, Any] = {
                "target": targets[target].as_dict(),
                "stage": h.stage.model_dump(),
                "edge_frames": [indices[0], indices[-1]],
                "command_id": h.command_id,
                "focus_plane": {
                    "frame": indices[centre],
                    "x_um": plane.stage.x,
                    "y_um": plane.stage.y,
                    "z_um": plane.stage.z,
                    "sample_time_s": plane.sample_time_s,
                },
            }
            if focus is not None:
                attributes["autofocus"] = focus[target]
            stores.append(
                write_zstack(
                    out / f"target-{target:04d}.ome.zarr",
                    stack,
                    pixel_size_um=h.pixel_size_um,
                    z_step_um=params.detail.z_step_um,
                    name=f"target {target}",
                    channel=h.channel,
                    attributes=attributes,
                )
            )
    return stores


def detail_stacks(
    edge: EdgeClient,
    detail_id: str | Collection[str],
    first_frame: int,
    per_target: int,
    transport: Transport,
) -> Iterator[tuple[int, np.ndarray, FrameHeader, list[int]]]:
    """The detail command's (or commands') z-stacks as they stream back: (target, stack, last
    frame's header, edge frame indices), until the edge says every command is done. A stack
    that lost an event to a device failure is logged and not yielded incomplete."""
    waiting = {detail_id} if isinstance(detail_id, str) else set(detail_id)
    if not waiting:
        return
    stack: list[np.ndarray] = []
    indices: list[int] = []
    for item in edge.frames(first_frame, transport=transport, notices=True):
        if isinstance(item, CommandDone) and item.command_id in waiting:
            if item.outcome != "completed":
                _log().warning(
                    "detail stacks %s: %s (%d of %d events failed or dropped)",
                    item.command_id,
                    item.outcome,
                    item.failed + item.dropped,
                    item.events,
                )
                stack, indices = [], []  # a stack cut short is not completed by the next one
            waiting.discard(item.command_id)
            if not waiting:
                return
            continue
        if isinstance(item, EventFailed) and item.command_id in waiting:
            _log().warning("detail event %d failed: %s", item.event_number, item.error)
            continue
        if not isinstance(item, Frame) or item.header.command_id not in waiting:
            continue
        stack.append(item.pixels)
        indices.append(item.index)
        if len(stack) == per_target:
            target = item.header.event.get("index", {}).get("p", 0)
            yield target, np.stack(stack), item.header, indices
            stack, indices = [], []


@flow(name="targeted-imaging", log_prints=True)
@reports_acquisition("targeted-imaging", stores=lambda summary: summary["stores"]["targets"])
def targeted_imaging(params: TargetedImagingParams) -> dict[str, Any]:
    """Overview -> segment -> decide -> detail z-stacks -> store -> summarise."""
    started = time.perf_counter()
    focus: list[dict[str, Any]] | None = None
    with microscope_run(params, _run_id()) as run:
        run_id, run_dir = run.run_id, run.run_dir
        limits = None
        if params.autofocus is not None:  # bad focus settings stop the run before any move
            limits = check_autofocus(
                run.edge, params.autofocus, params.focus_z_um, "targeted imaging"
            )
        plan = plan_overview(params)
        with _open_backend(params) as backend:
            analysis = _where_analysis_ran(params, backend)
            overview = segment_overview(params, plan, backend, run_id, run_dir)
        targets = decide_targets(params, overview.detections)
        if params.autofocus is None or limits is None:
            detail_id, detail_pixel_um = post_detail_acquisitions(params, targets, run_id)
        else:  # the focus workers: opened once, for every target
            workers = run.keep(open_focus_workers(params.autofocus))
            detail_id, detail_pixel_um, focus = focus_and_acquire_details(
                params, targets, run_id, run_dir, limits, workers
            )
        stores = store_detail_stacks(
            params, targets, detail_id, overview.first_frame, run_dir, focus
        )
    return summarise(
        params,
        RunRecord(
            run_id=run_id,
            run_dir=run_dir,
            overview_tiles=len(plan.tiles),
            detail_fov_um=(plan.width * detail_pixel_um, plan.height * detail_pixel_um),
            detections=len(overview.detections),
            mosaic_path=overview.mosaic_path,
            targets=targets,
            stores=stores,
            loop_latency_ms=overview.loop_latency_ms,
            queueing_ms=overview.queueing_ms,
            travel_um=path_length_um(np.array([(t.x_um, t.y_um) for t in targets])),
            started=started,
            analysis=analysis,
            focus=focus or [],
        ),
    )


def _run_id() -> str:
    """``ti-<timestamp>-<flow run>``: the Prefect flow run names the run, so a retried task
    sends the same command ids."""
    from prefect.runtime import flow_run

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = flow_run.id
    return f"ti-{stamp}-{str(run)[:8]}" if run else f"ti-{stamp}"


def _open_backend(params: TargetedImagingParams) -> InferenceBackend:
    """The compute profile's workers when ``profile`` is set (local, SLURM, PBS, Ray/KubeRay,
    as for the batch flows), else ``backend``'s."""
    profile = params.compute_profile()
    if profile is not None:
        return backend_for_profile(profile, params.model)
    return make_backend(params.backend.model_copy(update={"model": params.model}))


def _where_analysis_ran(params: TargetedImagingParams, backend: InferenceBackend) -> dict[str, Any]:
    """Engine, compute profile and workers of the backend, for the summary (provenance)."""
    info = backend.info()
    return {
        "engine": info["kind"],
        "profile": params.profile,
        "profile_kind": info.get("profile_kind"),
        "workers": info["workers"],
    }
