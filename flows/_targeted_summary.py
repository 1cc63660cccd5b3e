"""The last phase of targeted imaging: score, count, and publish artifacts to Prefect."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from tasks.decisions import Detection, FrameGeometry, tile_grid
from tasks.hardware import EdgeClient

from ._artifacts import publish_png
from ._focus_step import focus_errors_um, simulated_dof_um
from ._targeted_params import TargetedImagingParams

__all__ = ["MosaicCanvas", "RunRecord", "mosaic_canvas", "score_targets", "summarise"]

Region = tuple[float, float, float, float]


@dataclass(frozen=True)
class RunRecord:
    """What the earlier phases produced (small: no pixels)."""

    run_id: str
    run_dir: Path
    overview_tiles: int
    detail_fov_um: tuple[float, float]
    detections: int
    mosaic_path: Path
    targets: list[Detection]
    stores: list[Path]
    loop_latency_ms: list[float]  # per tile: frame ready -> decided, less queueing
    travel_um: float
    started: float
    analysis: dict[str, Any] = field(default_factory=dict)  # where the model ran
    queueing_ms: list[float] = field(default_factory=list)  # per tile: behind earlier tiles
    focus: list[dict[str, Any]] = field(default_factory=list)  # per target: its autofocus call


def score_targets(
    targets: list[tuple[float, float]],
    cells: list[dict[str, Any]],
    region: Region | Sequence[Region],
) -> dict[str, float | int]:
    """Precision: targets centred on a real nucleus; recall: nuclei in the region imaged
    (one rectangle, or several: a nucleus in any of them counts).

    ``cells`` are the simulator's truth records (``ids``, ``x_um``, ``y_um``, ``radius_um``).
    """
    regions: list[Region] = (
        [region] if isinstance(region[0], int | float) else list(region)  # type: ignore[list-item]
    )
    inside = [
        c
        for c in cells
        if any(x0 <= c["x_um"] <= x1 and y0 <= c["y_um"] <= y1 for x0, y0, x1, y1 in regions)
    ]
    if not targets:
        return {
            "cells_in_region": len(inside),
            "recall": 0.0,
            "precision": 0.0,
            "cells_found": 0,
            "targets_on_cells": 0,
        }
    centres = np.array([(c["x_um"], c["y_um"]) for c in cells]).reshape(-1, 2)
    radii = np.array([c["radius_um"] for c in cells])
    hit_cells: set[int] = set()
    on_a_cell = 0
    for tx, ty in targets:
        if len(cells) == 0:
            break
        d = np.hypot(centres[:, 0] - tx, centres[:, 1] - ty)
        k = int(np.argmin(d))
        if d[k] <= radii[k]:
            on_a_cell += 1
            hit_cells.add(int(cells[k]["ids"]))
    inside_ids = {int(c["ids"]) for c in inside}
    recall = len(hit_cells & inside_ids) / len(inside) if inside else 1.0
    return {
        "cells_in_region": len(inside),
        "recall": round(recall, 4),
        "precision": round(on_a_cell / len(targets), 4),
        "cells_found": len(hit_cells & inside_ids),
        "targets_on_cells": on_a_cell,
    }


@task(name="summarise", cache_policy=NO_CACHE)
def summarise(params: TargetedImagingParams, record: RunRecord) -> dict[str, Any]:
    """Counts, ground-truth score (simulated edge), and the Prefect artifacts."""
    per_target = len(params.detail.z_offsets())
    full_tiling = len(tile_grid(params.region.as_tuple(), record.detail_fov_um, 0.0)) * per_target
    detail_frames = per_target * len(record.targets)
    with EdgeClient.connect(
        microscope=params.microscope,
        url=params.edge_url,
        token_file=params.edge_token_file,
        ca_file=params.edge_ca_file,
    ) as edge:
        state = edge.wait_until_idle()
        truth = focus_error = None
        if params.score_against_truth and state.simulated:
            margin = 20.0
            x0, y0, x1, y1 = params.region.as_tuple()
            cells = edge.truth((x0 - margin, y0 - margin, x1 + margin, y1 + margin))["cells"]
            truth = score_targets(
                [(t.x_um, t.y_um) for t in record.targets], cells, params.region.as_tuple()
            )
            planes = _focus_planes(record.stores)
            focus_error = {
                on: focus_errors_um(edge, planes, _dof_um(params), on=on)
                for on in ("cell", "layer")
            }
    summary: dict[str, Any] = {
        "run_id": record.run_id,
        "prefect_flow_run_id": _flow_run_id(),
        "frames_acquired": state.frames_acquired,
        "frames_journaled": state.frames_journaled,
        "frames_stored": _planes_in(record.stores),
        "overview_tiles": record.overview_tiles,
        "targets_detected": record.detections,
        "targets_imaged": len(record.targets),
        "detail_frames": detail_frames,
        "full_tiling_frames": full_tiling,
        "detail_vs_full_tiling": round(detail_frames / full_tiling, 4) if full_tiling else None,
        "stage_travel_um": round(record.travel_um, 1),
        "truth": truth,
        "autofocus": record.focus or None,
        "detail_focus_error_um": focus_error,
        "analysis": record.analysis,
        "stores": {
            "journal": state.journal,
            "targets": [str(p) for p in record.stores],
            "run_dir": str(record.run_dir),
        },
        "loop_latency_ms": _p50_p99(record.loop_latency_ms),
        "queueing_ms": _p50_p99(record.queueing_ms),
        "wall_s": round(time.perf_counter() - record.started, 2),
    }
    _publish(params, record, summary)
    return summary


def _publish(params: TargetedImagingParams, record: RunRecord, summary: dict[str, Any]) -> None:
    rows = [
        {
            "target": i,
            "x_um": round(t.x_um, 2),
            "y_um": round(t.y_um, 2),
            "area_um2": round(t.area_um2, 1),
            "score": round(t.score, 1),
            "store": record.stores[i].name if i < len(record.stores) else "",
            **_focus_columns(record, i),
        }
        for i, t in enumerate(record.targets)
    ]
    create_table_artifact(rows, key="targeted-imaging-targets", description="Targets imaged")
    png = render_mosaic_png(record.mosaic_path, record.targets)
    publish_png(
        png,
        key="targeted-imaging-overview",
        description="Overview mosaic; circles: targets",
        path=record.run_dir / "overview_mosaic.png",
    )
    truth = summary["truth"]
    truth_lines = (
        f"| cells in region (truth) | {truth['cells_in_region']} |\n"
        f"| recall | {truth['recall']} |\n| precision | {truth['precision']} |\n"
        if truth
        else ""
    )
    create_markdown_artifact(
        f"# Targeted imaging {record.run_id}\n\n| measure | value |\n| --- | --- |\n"
        f"| overview tiles | {summary['overview_tiles']} |\n"
        f"| detections | {summary['targets_detected']} |\n"
        f"| targets imaged | {summary['targets_imaged']} |\n"
        f"| detail frames | {summary['detail_frames']} "
        f"(a full {params.detail.objective} tiling: {summary['full_tiling_frames']}) |\n"
        f"{truth_lines}"
        f"| frames acquired / journaled at the edge | {summary['frames_acquired']} / "
        f"{summary['frames_journaled']} |\n"
        f"| detail frames stored in this run's OME-Zarr | {summary['frames_stored']} |\n"
        f"| loop latency p50 / p99 (queueing excluded) | {summary['loop_latency_ms']['p50']} "
        f"/ {summary['loop_latency_ms']['p99']} ms |\n"
        f"| queueing behind earlier tiles p50 / p99 | {summary['queueing_ms']['p50']} / "
        f"{summary['queueing_ms']['p99']} ms |\n"
        f"| wall time | {summary['wall_s']} s |\n\nRun folder: `{record.run_dir}`\n",
        key="targeted-imaging-summary",
        description="Targeted imaging summary",
    )


@dataclass(frozen=True)
class MosaicCanvas:
    """The overview tiles placed on the stage: an 8-bit image, and where its pixels lie
    (``x0_um``, ``y0_um`` at its top left, ``um_per_px``; stage +x right, +y down)."""

    pixels: np.ndarray
    x0_um: float
    y0_um: float
    um_per_px: float

    def to_px(self, x_um: float, y_um: float) -> tuple[float, float]:
        return (x_um - self.x0_um) / self.um_per_px, (y_um - self.y0_um) / self.um_per_px


def mosaic_canvas(mosaic_path: Path, max_side: int = 1024) -> MosaicCanvas:
    """The overview thumbnails of ``mosaic_path`` (``_save_mosaic``) at their stage positions,
    each turned by the pixel affine and resized into its place, stretched to 8 bits."""
    from PIL import Image

    data = np.load(mosaic_path)
    thumbs, centres, affine = data["thumbs"], data["centres"], tuple(data["affine"])
    height, width = (int(v) for v in data["shape"])
    geoms = [FrameGeometry(float(x), float(y), width, height, affine) for x, y in centres]
    extents = np.array([g.extent_um for g in geoms])
    x0, y0 = extents[:, 0].min(), extents[:, 1].min()
    x1, y1 = extents[:, 2].max(), extents[:, 3].max()
    um_per_px = max((x1 - x0), (y1 - y0)) / max_side
    canvas = np.zeros((int((y1 - y0) / um_per_px) + 1, int((x1 - x0) / um_per_px) + 1), np.float32)
    lo, hi = np.percentile(thumbs, [1, 99.95])  # sparse nuclei: a high top keeps their texture
    for thumb, g in zip(thumbs, geoms, strict=True):
        tile = _stage_oriented(np.clip((thumb - lo) / max(hi - lo, 1), 0, 1), affine)
        gx0, gy0, gx1, gy1 = g.extent_um
        c0, r0 = int((gx0 - x0) / um_per_px), int((gy0 - y0) / um_per_px)
        w = max(1, min(round((gx1 - gx0) / um_per_px), canvas.shape[1] - c0))
        h = max(1, min(round((gy1 - gy0) / um_per_px), canvas.shape[0] - r0))
        resized = Image.fromarray(tile.astype(np.float32), mode="F").resize((w, h))
        canvas[r0 : r0 + h, c0 : c0 + w] = np.asarray(resized)
    pixels = (np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    return MosaicCanvas(pixels, float(x0), float(y0), float(um_per_px))


def render_mosaic_png(mosaic_path: Path, targets: list[Detection], max_side: int = 1024) -> bytes:
    """The overview thumbnails placed at their stage positions, targets circled."""
    from PIL import Image, ImageDraw

    mosaic = mosaic_canvas(mosaic_path, max_side)
    image = Image.fromarray(mosaic.pixels).convert("RGB")
    draw = ImageDraw.Draw(image)
    for t in targets:
        cx, cy = mosaic.to_px(t.x_um, t.y_um)
        rad = max(t.radius_um / mosaic.um_per_px * 1.5, 3)
        draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=(255, 64, 64), width=1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _stage_oriented(thumb: np.ndarray, affine: tuple[float, ...]) -> np.ndarray:
    """A tile turned so that its columns run along stage +x and its rows along stage +y."""
    a, b, _, c, d, _ = affine
    if abs(b) > abs(a):  # camera rotated a quarter turn: columns run along y
        thumb, a, d = thumb.T, b, c
    if a < 0:
        thumb = thumb[:, ::-1]
    if d < 0:
        thumb = thumb[::-1, :]
    return thumb


def _p50_p99(values: list[float]) -> dict[str, float]:
    values = values or [0.0]
    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p99": round(float(np.percentile(values, 99)), 2),
    }


def _focus_columns(record: RunRecord, i: int) -> dict[str, Any]:
    """Target ``i``'s autofocus in the targets table (nothing without autofocus)."""
    if i >= len(record.focus):
        return {}
    f = record.focus[i]
    return {"focus_z_um": f["stack_centre_z_um"], "focus_found": f["found"],
            "focus_frames": f["frames"]}  # fmt: skip


def _focus_planes(stores: list[Path]) -> list[tuple[float, float, float, float]]:
    """(x, y, z, sample time) of each stored stack's centre plane (the one meant in focus)."""
    out = []
    for store in stores:
        attrs = json.loads((store / "zarr.json").read_text())["attributes"]["scopeflow"]
        plane = attrs.get("focus_plane")
        if plane and plane.get("sample_time_s") is not None:
            out.append((plane["x_um"], plane["y_um"], plane["z_um"], plane["sample_time_s"]))
    return out


def _dof_um(params: TargetedImagingParams) -> float | None:
    """The depth of field a detail plane is judged by: the autofocus optics', else the
    simulator's objective of ``detail.objective``."""
    if params.autofocus is not None:
        return params.autofocus.optics.dof_um()
    return simulated_dof_um(params.detail.objective, params.detail.channel)


def _planes_in(stores: list[Path]) -> int:
    """The frames this run wrote into its OME-Zarr stores (read back from them)."""
    import zarr

    return int(sum(zarr.open_array(store / "0", mode="r").shape[0] for store in stores))


def _flow_run_id() -> str | None:
    """The Prefect flow run this summary belongs to (its page in the UI: /runs/flow-run/ID)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None
