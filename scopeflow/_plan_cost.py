"""What a useq sequence costs before it is expanded: an upper bound of its events and of the
work useq spends laying its plans out.

useq computes some layouts in pure Python whose cost grows faster than the events they make:
a ``two_opt`` order of random points (~7 µs x n² here: 2,000 points take 33 s), a
``nearest_neighbor`` order (~0.2 µs x n²), random points that must not overlap (~1.7 µs x n²),
a ``spiral`` grid (max(rows, columns)² steps for rows x columns cells), a polygon grid (a
shapely test, ~25 µs, for every cell of its bounding box), and a well plate's positions
(~100 µs each, laid out as soon as the sequence is validated). So
the events alone do not bound a request's work. `plan_cost` adds both up from the plans'
sizes without laying anything out; the edge refuses a sequence over either limit before
useq spends that time (``max_events_per_request``, ``max_layout_steps``). A layout step is
about a microsecond on a small machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import useq

__all__ = ["PlanCost", "plan_cost", "plate_cost"]

_TWO_OPT_STEPS = 7.0  # per n² (measured: 1,000 points 7.1 s, 2,000 points 33 s)
_NEAREST_STEPS = 0.2  # per n²
_NO_OVERLAP_STEPS = 1.7  # per n²: each candidate is compared with every point kept
_NO_OVERLAP_TRIES = 10_000  # useq draws up to this many candidates (MIN_RANDOM_POINTS)
_POLYGON_CELL_STEPS = 25.0  # a shapely intersection test per cell of the bounding box
_SPIRAL_STEPS = 1.3  # per max(rows, columns)²
_PLATE_POSITION_STEPS = 100.0  # a pydantic Position per well and point (90,000: 9 s)


@dataclass
class PlanCost:
    """An upper bound of the events of a sequence and the steps useq takes laying it out,
    with the costliest plan named (for the refusal)."""

    events: int = 1
    steps: float = 0.0
    worst: str = ""
    worst_steps: float = field(default=0.0, repr=False)

    def add_steps(self, steps: float, what: str) -> None:
        self.steps += steps
        if steps > self.worst_steps:
            self.worst, self.worst_steps = what, steps


def plan_cost(sequence: useq.MDASequence, max_steps: float) -> PlanCost:
    """The cost of ``sequence`` (events and layout steps; sub-sequences included). A plan
    whose exact size would itself take more than ``max_steps`` to compute (a polygon grid)
    counts its bounding box instead."""
    cost = PlanCost()
    cost.events = _sequence(sequence, cost, max_steps, "sequence")
    return cost


def plate_cost(plan: useq.WellPlatePlan, max_steps: float) -> PlanCost:
    """The cost of a well plate's positions: useq lays them all out (~100 µs each) as soon as
    a sequence holding the plate is validated, before any limit on its events applies."""
    cost = PlanCost()
    cost.events = _plate(plan, cost, max_steps, "stage_positions")
    return cost


def _sequence(sequence: useq.MDASequence, cost: PlanCost, max_steps: float, where: str) -> int:
    times = sequence.time_plan.num_timepoints() if sequence.time_plan is not None else 1
    zs = sequence.z_plan.num_positions() if sequence.z_plan is not None else 1
    channels = len(sequence.channels) or 1
    grid = _multipoint(sequence.grid_plan, cost, max_steps, f"{where}.grid_plan")
    positions = 0
    stage = sequence.stage_positions
    if isinstance(stage, useq.WellPlatePlan):
        positions = _plate(stage, cost, max_steps, f"{where}.stage_positions")
    else:
        for i, position in enumerate(stage or ()):
            sub = getattr(position, "sequence", None)
            if sub is None:
                positions += 1
            else:
                positions += _sequence(sub, cost, max_steps, f"{where}.stage_positions.{i}")
    return max(times, 1) * max(zs, 1) * channels * grid * max(positions, 1)


def _plate(plan: useq.WellPlatePlan, cost: PlanCost, max_steps: float, where: str) -> int:
    rows, columns = plan.plate.shape
    cost.add_steps(_times(1.0, rows * columns), f"{where}: a plate of {rows} x {columns} wells")
    # no selection: useq's len() says 0 wells, yet it iterates over every well of the plate
    wells = len(plan.selected_wells[0]) if plan.selected_wells is not None else rows * columns
    points = plan.well_points_plan
    per_well = (
        1
        if isinstance(points, useq.RelativePosition)
        else _multipoint(points, cost, max_steps, f"{where}.well_points_plan")
    )
    cost.add_steps(
        _times(_PLATE_POSITION_STEPS, wells * per_well),
        f"{where}: {wells} wells x {per_well} points",
    )
    return wells * per_well


def _multipoint(plan: object, cost: PlanCost, max_steps: float, where: str) -> int:
    """Positions of a grid or random-points plan (1 for none); its layout steps added."""
    if plan is None:
        return 1
    if isinstance(plan, useq.RandomPoints):
        return _random_points(plan, cost, where)
    fov_w = getattr(plan, "fov_width", None) or 1.0
    fov_h = getattr(plan, "fov_height", None) or 1.0
    rows, columns = _grid_shape(plan, fov_w, fov_h)
    cells = rows * columns
    if isinstance(plan, useq.GridFromPolygon):
        box = _times(_POLYGON_CELL_STEPS, cells)
        cost.add_steps(box, f"{where}: a polygon grid over {rows} x {columns} fields")
        if box > max_steps:
            return cells  # computing the exact count would cost that much
    else:
        cost.add_steps(_times(1.0, cells), f"{where}: a grid of {rows} x {columns} fields")
    mode = getattr(plan, "mode", None)
    if mode is not None and useq.OrderMode(mode) is useq.OrderMode.spiral:
        side = max(rows, columns)
        cost.add_steps(
            _times(_SPIRAL_STEPS, side * side), f"{where}: a spiral over {side} x {side}"
        )
    if isinstance(plan, useq.GridRowsColumns):
        return cells
    sized = plan.model_copy(update={"fov_width": fov_w, "fov_height": fov_h})  # type: ignore[attr-defined]
    return int(sized.num_positions())


def _random_points(plan: useq.RandomPoints, cost: PlanCost, where: str) -> int:
    n = plan.num_points
    what = f"{where}: {n} random points"
    cost.add_steps(_times(1.0, n), what)
    if not plan.allow_overlap and plan.fov_width and plan.fov_height:
        checks = _times(_NO_OVERLAP_STEPS, min(n * n, _NO_OVERLAP_TRIES * n))
        cost.add_steps(checks, f"{what} that must not overlap")
    order = plan.order
    if order is not None:
        per = {"two_opt": _TWO_OPT_STEPS, "nearest_neighbor": _NEAREST_STEPS}.get(
            useq.TraversalOrder(order).value, 0.0
        )
        cost.add_steps(_times(per, n * n), f"{what} in {useq.TraversalOrder(order).value} order")
    return n


def _times(weight: float, count: int) -> float:
    """``weight * count`` as a float, infinite where the count is beyond floats."""
    return weight * count if count < 10**300 else math.inf


def _grid_shape(plan: object, fov_w: float, fov_h: float) -> tuple[int, int]:
    """Rows and columns of a grid plan's layout (of its bounding box for a polygon)."""
    if isinstance(plan, useq.GridRowsColumns):
        return plan.rows, plan.columns
    overlap = getattr(plan, "overlap", (0.0, 0.0))
    dx = fov_w * (1 - overlap[0] / 100)
    dy = fov_h * (1 - overlap[1] / 100)
    if isinstance(plan, useq.GridFromPolygon):
        x0, y0, x1, y1 = plan.poly.bounds
        span_x, span_y = x1 - x0, y1 - y0
    elif isinstance(plan, useq.GridFromEdges):
        span_x, span_y = abs(plan.right - plan.left), abs(plan.bottom - plan.top)
    elif isinstance(plan, useq.GridWidthHeight):
        span_x, span_y = plan.width, plan.height
    else:  # another multi-point plan: its own count, no layout of its own
        return 1, int(plan.num_positions())  # type: ignore[attr-defined]
    return _count(span_y, fov_h, dy), _count(span_x, fov_w, dx)


def _count(span: float, fov: float, step: float) -> int:
    if span <= fov:
        return 1
    if step <= 0:
        raise ValueError(f"a grid step of {step} (overlap of 100 % or more) never ends")
    count = (span - fov) / step
    return math.ceil(count) + 1 if math.isfinite(count) else _UNCOUNTABLE


_UNCOUNTABLE = 10**309  # more than any float: a refusal, never a layout
