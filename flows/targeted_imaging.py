"""Targeted imaging: scan an overview, find the nuclei, image each one at high magnification.

Control plane: one Prefect task per phase (overview, segmentation, decision, detail acquisition,
storage, summary). Data plane: frames go from the edge's stream straight to Ray/Dask workers
inside the segmentation task; Prefect only sees small results (detections, targets, paths).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import useq
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from tasks.decisions import (
    Detection,
    FrameGeometry,
    detections_from_objects,
    merge_overlapping,
    order_for_short_travel,
    path_length_um,
    select_targets,
    tile_grid,
)
from tasks.hardware import EdgeClient
from tasks.inference import (
    InferenceBackend,
    InferenceFuture,
    backend_for_profile,
    make_backend,
)
from tasks.storage import write_zstack

from ._targeted_params import TargetedImagingParams
from ._targeted_summary import RunRecord, summarise

__all__ = ["OverviewPlan", "targeted_imaging"]


@dataclass(frozen=True)
class OverviewPlan:
    """Which frames of the edge session hold the overview, and where they are."""

    first_index: int
    tiles: list[tuple[float, float]]
    width: int
    height: int
    affine: tuple[float, float, float, float, float, float]


@dataclass
class OverviewResult:
    detections: list[Detection]
    mosaic_path: Path
    loop_latency_ms: list[float] = field(default_factory=list)


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside Prefect, the module's logger when a task runs on its own."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _client(params: TargetedImagingParams) -> EdgeClient:
    return EdgeClient(params.edge_url, token_file=params.edge_token_file)


@task(name="acquire-overview", cache_policy=NO_CACHE)
def acquire_overview(params: TargetedImagingParams) -> OverviewPlan:
    """Queue the overview tiles at the edge (low magnification)."""
    ov = params.overview
    with _client(params) as edge:
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
        edge.submit_events(events)
    _log().info("overview: %d tiles at %s queued", len(tiles), ov.objective)
    return OverviewPlan(
        first_index=state.frames_journaled,
        tiles=tiles,
        width=state.image_width,
        height=state.image_height,
        affine=state.pixel_affine,
    )


@task(name="segment-overview", cache_policy=NO_CACHE)
def segment_overview(
    params: TargetedImagingParams, plan: OverviewPlan, backend: InferenceBackend, run_dir: Path
) -> OverviewResult:
    """Stream the tiles from the edge into the workers as they arrive; collect detections."""
    n = len(plan.tiles)
    # tile -> (frame ready at the edge, ns; its geometry; the worker's answer to come)
    pending: dict[int, tuple[int, FrameGeometry, InferenceFuture]] = {}
    thumbs: list[np.ndarray] = []
    centres: list[tuple[float, float]] = []
    latencies: list[float] = []
    detections: list[Detection] = []

    def harvest(block: bool) -> None:
        """Collect finished segmentations (all of them when ``block``), timing each."""
        while pending:
            done = [tile for tile, (_, _, fut) in pending.items() if fut.done()]
            if not done:
                if not block:
                    return
                time.sleep(0.002)
                continue
            for tile in done:
                t_ready_ns, geometry, future = pending.pop(tile)
                objects = future.result(timeout=600)
                latencies.append((time.time_ns() - t_ready_ns) / 1e6)
                detections.extend(detections_from_objects(objects, geometry, tile))

    with _client(params) as edge:
        frames = edge.frames(
            plan.first_index, stop=plan.first_index + n, transport=params.transport
        )
        for tile, frame in enumerate(frames):
            h = frame.header
            geometry = FrameGeometry(h.stage.x, h.stage.y, plan.width, plan.height, plan.affine)
            # workers send back measured objects, not label images
            future = backend.submit(frame.pixels, pixel_size_um=h.pixel_size_um, objects=True)
            pending[tile] = (h.t_ready_ns, geometry, future)
            thumbs.append(frame.pixels[::8, ::8].copy())
            centres.append((h.stage.x, h.stage.y))
            harvest(block=False)
        harvest(block=True)
    mosaic_path = run_dir / "overview_mosaic.npz"
    np.savez_compressed(
        mosaic_path,
        thumbs=np.stack(thumbs),
        centres=np.array(centres),
        affine=np.array(plan.affine),
        shape=np.array([plan.height, plan.width]),
    )
    _log().info("segmented %d tiles: %d detections", n, len(detections))
    return OverviewResult(detections, mosaic_path, latencies)


@task(name="decide-targets", cache_policy=NO_CACHE)
def decide_targets(params: TargetedImagingParams, detections: list[Detection]) -> list[Detection]:
    """Merge tile overlaps, keep what the rules allow, order for short stage travel."""
    merged = merge_overlapping(detections)
    inside = [d for d in merged if params.region.contains(d.x_um, d.y_um)]
    chosen = select_targets(inside, params.rules)
    if not chosen:
        return []
    order = order_for_short_travel(np.array([(d.x_um, d.y_um) for d in chosen]))
    targets = [chosen[i] for i in order]
    _log().info(
        "%d detections -> %d merged -> %d in region -> %d targets",
        len(detections),
        len(merged),
        len(inside),
        len(targets),
    )
    return targets


@task(name="post-detail-acquisitions", cache_policy=NO_CACHE)
def post_detail_acquisitions(
    params: TargetedImagingParams, targets: list[Detection]
) -> tuple[int, float]:
    """Send a z-stack per target; returns the first detail frame index and the pixel size.

    A target outside the edge's safety envelope makes the edge refuse the whole command: the
    task fails with the edge's reason (which limit, which value) and nothing is acquired.
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
    with _client(params) as edge:
        edge.wait_until_idle()
        first = edge.state().frames_journaled
        edge.set_objective(det.objective)
        pixel_size = edge.state().pixel_size_um
        if events:
            edge.submit_events(events)
    return first, pixel_size


@task(name="store-detail-stacks", cache_policy=NO_CACHE)
def store_detail_stacks(
    params: TargetedImagingParams, targets: list[Detection], first_index: int, run_dir: Path
) -> list[Path]:
    """Stream the detail frames back and write one OME-Zarr z-stack per target."""
    per_target = len(params.detail.z_offsets())
    stores: list[Path] = []
    if not targets:
        return stores
    out = run_dir / "targets"
    out.mkdir(parents=True, exist_ok=True)
    stack: list[np.ndarray] = []
    with _client(params) as edge:
        total = per_target * len(targets)
        frames = edge.frames(first_index, stop=first_index + total, transport=params.transport)
        for i, frame in enumerate(frames):
            stack.append(frame.pixels)
            if len(stack) == per_target:
                p = i // per_target
                h = frame.header
                target = targets[p]
                stores.append(
                    write_zstack(
                        out / f"target-{p:04d}.ome.zarr",
                        np.stack(stack),
                        pixel_size_um=h.pixel_size_um,
                        z_step_um=params.detail.z_step_um,
                        name=f"target {p}",
                        channel=h.channel,
                        attributes={
                            "target": target.as_dict(),
                            "stage": h.stage.model_dump(),
                            "edge_frames": [first_index + p * per_target, i + first_index],
                        },
                    )
                )
                stack = []
    return stores


@flow(name="targeted-imaging", log_prints=True)
def targeted_imaging(params: TargetedImagingParams) -> dict[str, Any]:
    """Overview -> segment -> decide -> detail z-stacks -> store -> summarise."""
    started = time.perf_counter()
    run_id = datetime.now(UTC).strftime("ti-%Y%m%dT%H%M%SZ")
    run_dir = params.output_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with _open_backend(params) as backend:
        analysis = _where_analysis_ran(params, backend)
        plan = acquire_overview(params)
        overview = segment_overview(params, plan, backend, run_dir)
    targets = decide_targets(params, overview.detections)
    first_detail, detail_pixel_um = post_detail_acquisitions(params, targets)
    stores = store_detail_stacks(params, targets, first_detail, run_dir)
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
            travel_um=path_length_um(np.array([(t.x_um, t.y_um) for t in targets])),
            started=started,
            analysis=analysis,
        ),
    )


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
