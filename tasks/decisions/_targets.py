"""From label images to a short, rule-abiding list of targets on the stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scopeflow import ObjectTable

from ._geometry import FrameGeometry

__all__ = [
    "Detection",
    "SelectionRules",
    "choose_targets",
    "detections_from_labels",
    "detections_from_objects",
    "merge_overlapping",
    "order_for_short_travel",
    "path_length_um",
    "select_targets",
]


@dataclass(frozen=True)
class Detection:
    """One object found in one tile, in stage coordinates."""

    x_um: float
    y_um: float
    area_um2: float
    radius_um: float
    score: float
    tile: int
    touches_border: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


class SelectionRules(BaseModel):
    """Which detections become targets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_area_um2: float = Field(20.0, ge=0, description="Smaller objects are debris")
    max_area_um2: float = Field(1_000.0, gt=0, description="Larger objects are clumps")
    max_targets: int = Field(50, ge=1, description="At most this many, the best scores first")
    min_score: float = Field(0.0, description="Minimum mean intensity (frame units)")


def detections_from_labels(
    labels: np.ndarray, image: np.ndarray, geometry: FrameGeometry, tile: int
) -> list[Detection]:
    """Centroid, area and mean intensity of every labelled object, mapped to the stage.

    Measures the objects with ``tasks.inference.measure_objects`` (imported here, so that
    importing the decisions never loads the inference package and its scipy).
    """
    from tasks.inference import measure_objects

    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
    return detections_from_objects(measure_objects(labels, image), geometry, tile)


def detections_from_objects(
    objects: ObjectTable, geometry: FrameGeometry, tile: int
) -> list[Detection]:
    """The measured objects of one frame (as a worker returns them), mapped to the stage."""
    if len(objects) == 0:
        return []
    xs, ys = geometry.to_stage(objects.centroid_row, objects.centroid_col)
    areas = objects.area_px * geometry.pixel_size_um**2
    border = objects.touches_border()
    return [
        Detection(
            x_um=float(xs[k]),
            y_um=float(ys[k]),
            area_um2=float(areas[k]),
            radius_um=float(np.sqrt(areas[k] / np.pi)),
            score=float(objects.mean_intensity[k]),
            tile=tile,
            touches_border=bool(border[k]),
        )
        for k in range(len(objects))
    ]


def merge_overlapping(detections: list[Detection]) -> list[Detection]:
    """One detection per object where tiles overlap.

    Two detections closer than the larger radius are the same object; the one not cut by a
    tile border (then the larger) is kept.
    """
    order = sorted(detections, key=lambda d: (d.touches_border, -d.area_um2))
    kept: list[Detection] = []
    if not order:
        return kept
    for det in order:
        if not any(
            np.hypot(det.x_um - k.x_um, det.y_um - k.y_um) < max(det.radius_um, k.radius_um)
            for k in kept
        ):
            kept.append(det)
    return kept


def select_targets(detections: list[Detection], rules: SelectionRules) -> list[Detection]:
    """Apply the size and score rules; keep the best ``max_targets`` by score."""
    eligible = [
        d
        for d in detections
        if rules.min_area_um2 <= d.area_um2 <= rules.max_area_um2 and d.score >= rules.min_score
    ]
    eligible.sort(key=lambda d: -d.score)
    return eligible[: rules.max_targets]


def choose_targets(
    detections: list[Detection],
    rules: SelectionRules,
    inside: Callable[[float, float], bool] | None = None,
) -> list[Detection]:
    """Targets from one overview's detections: merge tile overlaps, keep those ``inside`` the
    area imaged (all when None), apply the rules, order them for short stage travel."""
    merged = merge_overlapping(detections)
    kept = [d for d in merged if inside is None or inside(d.x_um, d.y_um)]
    chosen = select_targets(kept, rules)
    if not chosen:
        return []
    order = order_for_short_travel(np.array([(d.x_um, d.y_um) for d in chosen]))
    return [chosen[i] for i in order]


def path_length_um(points: np.ndarray, start: tuple[float, float] | None = None) -> float:
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if start is not None:
        pts = np.vstack([np.asarray(start, dtype=float), pts])
    return float(np.sum(np.hypot(*np.diff(pts, axis=0).T))) if len(pts) > 1 else 0.0


def order_for_short_travel(
    points: np.ndarray, start: tuple[float, float] | None = None, max_passes: int = 50
) -> list[int]:
    """Visiting order of ``points`` (N x 2, µm) with short stage travel.

    Nearest neighbour from ``start`` (or the first point), then 2-opt moves on the open path
    (each reverses a stretch of the route when that shortens it).
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    n = len(pts)
    if n <= 1:
        return list(range(n))
    # node n is the start position (when given): fixed at the head of the path
    nodes = np.vstack([pts, np.asarray(start, dtype=float)]) if start is not None else pts
    dist = np.hypot(*(nodes[:, None, :] - nodes[None, :, :]).transpose(2, 0, 1)).tolist()
    here = n if start is not None else 0
    left = set(range(n))
    route: list[int] = []
    if start is None:
        route.append(0)
        left.remove(0)
    while left:
        nearest = min(left, key=lambda k: dist[here][k])
        route.append(nearest)
        left.remove(nearest)
        here = nearest
    head = n if start is not None else None
    for _ in range(max_passes):
        improved = False
        for i in range(n - 1):
            before = route[i - 1] if i > 0 else head
            for j in range(i + 1, n):
                after = route[j + 1] if j + 1 < n else None
                old = (dist[before][route[i]] if before is not None else 0.0) + (
                    dist[route[j]][after] if after is not None else 0.0
                )
                new = (dist[before][route[j]] if before is not None else 0.0) + (
                    dist[route[i]][after] if after is not None else 0.0
                )
                if new < old - 1e-9:
                    route[i : j + 1] = route[i : j + 1][::-1]
                    improved = True
        if not improved:
            break
    return route
