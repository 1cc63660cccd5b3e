"""Plate screen: targeted imaging in every selected well of a multi-well plate, stored as an
OME-Zarr HCS plate.

The plate is useq's (`WellPlatePlan`: plate type from its registry, well selection, a grid of
fields per well), placed on the stage by a calibration from measured wells. The phases are
targeted imaging's, run once over the whole plate on the closed-loop core: every well's
overview fields in one loop (one Prefect task), targets chosen per well, one detail command
for all targets, then one HCS plate: acquisition 0 holds each well's overview fields,
acquisition 1 a z-stack field per target.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import useq
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.decisions import (
    Detection,
    FrameGeometry,
    PlateCalibration,
    PlateField,
    calibrate_plate,
    check_plate_on_stage,
    choose_targets,
    plate_fields,
    plate_type,
    well_index,
)
from tasks.live import DecisionLog
from tasks.storage import HcsAcquisition, PlateWriter

from ._acquisition_report import reports_acquisition
from ._microscope_run import microscope_run
from ._plate_params import PlateScreenParams
from ._plate_summary import PlateRecord, summarise_plate
from .targeted_imaging import (
    OverviewPlan,
    _log,
    _open_backend,
    _run_id,
    _where_analysis_ran,
    detail_stacks,
    post_detail_acquisitions,
    segment_overview,
)

__all__ = ["PlatePlan", "WellTarget", "plate_screen"]

OVERVIEW, DETAIL = 0, 1  # the plate's acquisition ids


@dataclass(frozen=True)
class PlatePlan:
    """The calibrated plate, its fields in acquisition order, and the overview they make."""

    calibration: PlateCalibration
    rows: list[str]
    columns: list[str]
    fields: list[PlateField]
    overview: OverviewPlan

    def well_place(self, well: str) -> tuple[str, str]:
        """The (row, column) names of a well of this plan."""
        f = next(f for f in self.fields if f.well == well)
        return self.rows[f.row], self.columns[f.column]

    def field_extents(self) -> dict[str, list[tuple[float, float, float, float]]]:
        """Each well's overview fields on the stage, (x0, y0, x1, y1) µm."""
        ov = self.overview
        out: dict[str, list[tuple[float, float, float, float]]] = {}
        for f in self.fields:
            geometry = FrameGeometry(f.x_um, f.y_um, ov.width, ov.height, ov.affine)
            out.setdefault(f.well, []).append(geometry.extent_um)
        return out


@dataclass(frozen=True)
class WellTarget:
    """A target and the well it was found in."""

    well: str
    target: Detection


@task(name="plan-plate", cache_policy=NO_CACHE)
def plan_plate(params: PlateScreenParams) -> PlatePlan:
    """Calibrate the plate, lay each well's fields at the overview objective, and refuse a
    plate whose fields fall outside the edge's stage envelope before anything moves."""
    kind = plate_type(params.plate)
    calibration = calibrate_plate(
        params.plate, params.calibration, pitch_tolerance=params.pitch_tolerance
    )
    if params.wells is None:
        selected: Any = slice(None)
    else:
        picked = [well_index(w, kind) for w in params.wells]
        selected = (tuple(r for r, _ in picked), tuple(c for _, c in picked))
    ov = params.overview
    with params.connect() as edge:
        edge.wait_until_idle()
        edge.set_objective(ov.objective)
        state = edge.state()
        envelope = edge.info()["envelope"]
    geometry = FrameGeometry(0, 0, state.image_width, state.image_height, state.pixel_affine)
    x0, y0, x1, y1 = geometry.extent_um
    fov = (x1 - x0, y1 - y0)
    grid = useq.GridRowsColumns(
        rows=params.fields.rows,
        columns=params.fields.columns,
        overlap=params.fields.overlap * 100,
        fov_width=fov[0],
        fov_height=fov[1],
    )
    plan = calibration.plan(selected, grid)
    limits = (*envelope["x_limits_um"], *envelope["y_limits_um"])
    check_plate_on_stage(plan, (limits[0], limits[2], limits[1], limits[3]), fov)
    fields = plate_fields(plan)
    events = [
        useq.MDAEvent(
            x_pos=f.x_um,
            y_pos=f.y_um,
            z_pos=params.focus_z_um,
            channel=ov.channel,
            exposure=ov.exposure_ms,
            index={"p": i},
            pos_name=f"{f.well}-{f.field}",
        )
        for i, f in enumerate(fields)
    ]
    tiles = [(f.x_um, f.y_um) for f in fields]
    _log().info(
        "plate %s: A1 at (%.0f, %.0f) µm, rotation %.3f°, pitch scale %.4f; %d wells x %d fields",
        params.plate,
        *calibration.a1_center_um,
        calibration.rotation_deg,
        calibration.scale,
        len(plan.selected_well_names),
        plan.num_points_per_well,
    )
    names = kind.all_well_names
    return PlatePlan(
        calibration=calibration,
        rows=[str(n)[:-1] for n in names[:, 0]],  # "A1", "B1", ... -> "A", "B", ...
        columns=[str(c + 1) for c in range(kind.columns)],
        fields=fields,
        overview=OverviewPlan(
            tiles, state.image_width, state.image_height, state.pixel_affine, events
        ),
    )


@task(name="decide-well-targets", cache_policy=NO_CACHE)
def decide_well_targets(
    params: PlateScreenParams, plan: PlatePlan, detections: list[Detection]
) -> list[WellTarget]:
    """Per well: merge field overlaps, keep what lies in the well's fields, apply the rules
    (``max_targets`` per well), order for short travel; wells in the plan's order."""
    by_well: dict[str, list[Detection]] = {}
    for d in detections:
        by_well.setdefault(plan.fields[d.tile].well, []).append(d)
    extents = plan.field_extents()
    out: list[WellTarget] = []
    for well, boxes in extents.items():

        def inside(x: float, y: float, boxes: list[tuple[float, ...]] = boxes) -> bool:
            return any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in boxes)

        chosen = choose_targets(by_well.get(well, []), params.rules, inside)
        out.extend(WellTarget(well, t) for t in chosen)
    _log().info("%d detections -> %d targets in %d wells", len(detections), len(out), len(extents))
    return out


@task(name="store-plate", cache_policy=NO_CACHE)
def store_plate(
    params: PlateScreenParams,
    plan: PlatePlan,
    overview_log: Path,
    targets: list[WellTarget],
    detail_id: str,
    first_frame: int,
    run_dir: Path,
) -> Path:
    """One OME-Zarr HCS plate: each well's overview fields (acquisition 0, read back from the
    edge's journal by frame index) and a z-stack field per target (acquisition 1, streamed
    back by the detail command's id)."""
    path = run_dir / "plate.ome.zarr"
    writer = PlateWriter(
        path,
        name=f"{params.plate} {run_dir.name}",
        rows=plan.rows,
        columns=plan.columns,
        acquisitions=[
            HcsAcquisition(OVERVIEW, f"overview {params.overview.objective}"),
            HcsAcquisition(DETAIL, f"detail {params.detail.objective}"),
        ],
        attributes={
            "plate": params.plate,
            "calibration": asdict(plan.calibration),
            "run": run_dir.name,
        },
    )
    frames = [r["frame"] for r in DecisionLog.read(overview_log) if r.get("type") == "decision"]
    with params.connect() as edge:
        for index in sorted(frames):
            frame = edge.frame(index)
            h = frame.header
            f = plan.fields[h.event.get("index", {}).get("p", 0)]
            row, column = plan.rows[f.row], plan.columns[f.column]
            writer.add_field(
                row,
                column,
                frame.pixels,
                acquisition=OVERVIEW,
                pixel_size_um=h.pixel_size_um,
                channel=h.channel,
                attributes={
                    "well": f.well,
                    "well_field": f.field,
                    "stage": h.stage.model_dump(),
                    "edge_frame": frame.index,
                    "command_id": h.command_id,
                },
            )
        if targets:
            per_target = len(params.detail.z_offsets())
            for target, stack, h, indices in detail_stacks(
                edge, detail_id, first_frame, per_target, params.transport
            ):
                wt = targets[target]
                row, column = plan.well_place(wt.well)
                writer.add_field(
                    row,
                    column,
                    stack if len(stack) > 1 else stack[0],
                    acquisition=DETAIL,
                    pixel_size_um=h.pixel_size_um,
                    z_step_um=params.detail.z_step_um,
                    channel=h.channel,
                    attributes={
                        "well": wt.well,
                        "target": wt.target.as_dict(),
                        "stage": h.stage.model_dump(),
                        "edge_frames": [indices[0], indices[-1]],
                        "command_id": detail_id,
                    },
                )
    return path


@flow(name="plate-screen", log_prints=True)
@reports_acquisition("plate-screen", stores=lambda summary: [summary["stores"]["plate"]])
def plate_screen(params: PlateScreenParams) -> dict[str, Any]:
    """Calibrate -> overview fields per well -> targets per well -> detail z-stacks -> HCS
    plate -> summary."""
    started = time.perf_counter()
    with microscope_run(params, _run_id().replace("ti-", "ps-", 1)) as run:
        run_id, run_dir = run.run_id, run.run_dir
        plan = plan_plate(params)
        with _open_backend(params) as backend:
            analysis = _where_analysis_ran(params, backend)
            overview = segment_overview(
                params, plan.overview, backend, run_id, run_dir, mosaic=False
            )
        targets = decide_well_targets(params, plan, overview.detections)
        detail_id, _ = post_detail_acquisitions(params, [t.target for t in targets], run_id)
        store = store_plate(
            params,
            plan,
            run_dir / "overview-decisions.jsonl",
            targets,
            detail_id,
            overview.first_frame,
            run_dir,
        )
    return summarise_plate(
        params,
        PlateRecord(
            run_id=run_id,
            run_dir=run_dir,
            plate_store=store,
            field_extents=plan.field_extents(),
            calibration=plan.calibration,
            detections=len(overview.detections),
            targets=[(t.well, t.target) for t in targets],
            loop_latency_ms=overview.loop_latency_ms,
            started=started,
            analysis=analysis,
        ),
    )
