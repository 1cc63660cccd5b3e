"""Multi-well plates on the stage: plate types from useq's registry, stage calibration from
measured wells, and the check that every field lies on the stage.

Coordinates follow useq's ``WellPlatePlan``: stage µm, A1 at ``a1_center_xy``, columns along
+x and rows along -y before the plate's rotation (anti-clockwise, degrees).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import useq

from scopeflow import ConfigurationError

__all__ = [
    "PlateCalibration",
    "PlateField",
    "calibrate_plate",
    "check_plate_on_stage",
    "plate_fields",
    "plate_type",
    "well_index",
]

_WELL = re.compile(r"^([A-Za-z]+)0*(\d+)$")


def plate_type(name: str) -> useq.WellPlate:
    """The plate registered in useq under ``name``; ConfigurationError listing the known ones."""
    known = sorted(useq.registered_well_plate_keys(), key=_natural)
    if name not in known:
        raise ConfigurationError(
            f"unknown plate type {name!r}; known types: {', '.join(known)} "
            "(register others with useq.register_well_plates)"
        )
    return useq.WellPlate.from_str(name)


def _natural(name: str) -> tuple[int, str]:
    """``6-well`` before ``96-well`` before ``384-well``; names without a number last."""
    digits = re.match(r"\d+", name)
    return (int(digits.group()) if digits else 1 << 30, name)


def well_index(name: str, plate: useq.WellPlate) -> tuple[int, int]:
    """(row, column), zero-based, of a well name such as ``"A1"``, ``"H12"`` or ``"AB07"``."""
    match = _WELL.match(name.strip())
    if not match:
        raise ConfigurationError(
            f"well {name!r} is not a well name: write a row and a column, e.g. A1"
        )
    row = 0
    for letter in match.group(1).upper():
        row = row * 26 + (ord(letter) - 64)
    row, column = row - 1, int(match.group(2)) - 1
    if not (0 <= row < plate.rows and 0 <= column < plate.columns):
        raise ConfigurationError(
            f"well {name!r} is not on a {plate.rows}x{plate.columns} plate "
            f"({plate.name or 'plate'}: rows A-{plate.all_well_names[-1, 0][:-1]}, "
            f"columns 1-{plate.columns})"
        )
    return row, column


def _plate_xy_um(plate: useq.WellPlate, row: int, column: int) -> np.ndarray:
    """A well's centre relative to A1 on an unrotated plate (columns +x, rows -y), µm."""
    sx, sy = plate.well_spacing
    return np.array([column * sx * 1000.0, -row * sy * 1000.0])


@dataclass(frozen=True)
class PlateCalibration:
    """Where a plate lies on the stage: A1's centre, the rotation and the pitch's scale
    (measured / nominal), with the worst misfit of the measured wells (0 with two wells)."""

    plate: str
    a1_center_um: tuple[float, float]
    rotation_deg: float
    scale: float
    residual_um: float

    def plan(
        self,
        selected_wells: object = slice(None),
        well_points_plan: useq.GridRowsColumns
        | useq.RandomPoints
        | useq.RelativePosition
        | None = None,
    ) -> useq.WellPlatePlan:
        """useq's plan of the calibrated plate: the pitch scaled by the measured scale."""
        nominal = plate_type(self.plate)
        sx, sy = nominal.well_spacing
        plate = nominal.model_copy(update={"well_spacing": (sx * self.scale, sy * self.scale)})
        return useq.WellPlatePlan(
            plate=plate,
            a1_center_xy=self.a1_center_um,
            rotation=self.rotation_deg,
            selected_wells=selected_wells,
            well_points_plan=well_points_plan or useq.RelativePosition(),
        )


def calibrate_plate(
    plate: str,
    measured_um: Mapping[str, tuple[float, float]],
    *,
    pitch_tolerance: float = 0.02,
    fit_tolerance_um: float = 100.0,
) -> PlateCalibration:
    """Fit A1's centre, the rotation and the scale to wells measured on the stage.

    ``measured_um`` maps well names to their measured centres; it needs A1 and at least one
    other well (the opposite corner gives the best angle). Raises ConfigurationError when the
    measured distances disagree with the plate type's pitch by more than ``pitch_tolerance``
    (wrong plate type, or a well measured in the wrong place), or, with three wells or more,
    when a well lies more than ``fit_tolerance_um`` from the fitted plate.
    """
    kind = plate_type(plate)
    names = list(measured_um)
    indices = [well_index(n, kind) for n in names]
    if (0, 0) not in indices or len(names) < 2:
        raise ConfigurationError(
            f"a plate calibration needs the centre of A1 and of at least one other well "
            f"(best: the opposite corner, {kind.all_well_names[-1, -1]}); got {names}"
        )
    nominal = np.array([_plate_xy_um(kind, *rc) for rc in indices])
    stage = np.array([measured_um[n] for n in names], dtype=float)
    if len({tuple(p) for p in nominal}) < len(names):
        raise ConfigurationError(f"the same well is named twice in {names}")
    rotation, scale, offset = _similarity(nominal, stage)
    if abs(scale - 1.0) > pitch_tolerance:
        far = names[int(np.argmax(np.linalg.norm(nominal - nominal[0], axis=1)))]
        a1 = names[indices.index((0, 0))]
        got = float(np.linalg.norm(stage[names.index(far)] - stage[names.index(a1)]))
        want = float(np.linalg.norm(nominal[names.index(far)] - nominal[names.index(a1)]))
        raise ConfigurationError(
            f"the measured wells do not fit a {plate} plate: A1 to {far} is {got:.0f} µm on the "
            f"stage, the plate's pitch says {want:.0f} µm (scale {scale:.3f}, tolerance "
            f"{pitch_tolerance:.0%}); check the plate type and re-measure the wells' centres"
        )
    fitted = nominal @ _rotation(rotation).T * scale + offset
    misfit = np.linalg.norm(fitted - stage, axis=1)
    if misfit.max() > fit_tolerance_um:
        worst = names[int(np.argmax(misfit))]
        raise ConfigurationError(
            f"the measured wells are inconsistent: {worst} lies {misfit.max():.0f} µm from the "
            f"plate fitted to all of them (tolerance {fit_tolerance_um:.0f} µm); re-measure it"
        )
    a1 = offset  # A1 is the origin of the nominal coordinates
    return PlateCalibration(
        plate=plate,
        a1_center_um=(float(a1[0]), float(a1[1])),
        rotation_deg=math.degrees(rotation),
        scale=float(scale),
        residual_um=float(misfit.max()),
    )


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares rotation (rad, anti-clockwise), scale and offset with dst = s R src + t
    (Umeyama's closed form in 2-D)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    dot = float((a * b).sum())
    cross = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum())
    theta = math.atan2(cross, dot)
    norm = float((a**2).sum())
    scale = math.hypot(dot, cross) / norm if norm else 1.0
    offset = mu_d - scale * (_rotation(theta) @ mu_s)
    return theta, scale, offset


@dataclass(frozen=True)
class PlateField:
    """One field of view of a plate plan: its well, its number in the well, its stage centre."""

    well: str
    row: int
    column: int
    field: int
    x_um: float
    y_um: float


def plate_fields(plan: useq.WellPlatePlan) -> list[PlateField]:
    """The plan's image positions, in its order, with their well and field number."""
    per_well = plan.num_points_per_well
    fields = []
    for i, pos in enumerate(plan.image_positions):
        well = plan.selected_well_positions[i // per_well]
        fields.append(
            PlateField(
                well=str(well.name),
                row=int(well.plate_row or 0),
                column=int(well.plate_col or 0),
                field=i % per_well,
                x_um=float(pos.x or 0.0),
                y_um=float(pos.y or 0.0),
            )
        )
    return fields


def check_plate_on_stage(
    plan: useq.WellPlatePlan,
    limits_um: tuple[float, float, float, float],
    fov_um: tuple[float, float] = (0.0, 0.0),
) -> None:
    """ConfigurationError naming the wells whose fields (with half a field of view around each
    centre) fall outside the stage's ``limits_um`` (x0, y0, x1, y1): a calibration that puts
    the plate off the slide or outside the safety envelope is refused before anything moves."""
    x0, y0, x1, y1 = limits_um
    hw, hh = fov_um[0] / 2, fov_um[1] / 2
    off: dict[str, tuple[float, float]] = {}
    for f in plate_fields(plan):
        if not (x0 + hw <= f.x_um <= x1 - hw and y0 + hh <= f.y_um <= y1 - hh):
            off.setdefault(f.well, (f.x_um, f.y_um))
    if off:
        shown = ", ".join(f"{w} at ({x:.0f}, {y:.0f})" for w, (x, y) in list(off.items())[:5])
        more = f" and {len(off) - 5} more" if len(off) > 5 else ""
        raise ConfigurationError(
            f"{len(off)} well(s) fall off the stage's limits x {x0:.0f}-{x1:.0f}, "
            f"y {y0:.0f}-{y1:.0f} µm: {shown}{more}; check the calibration (A1's centre, "
            "the rotation) or select wells inside the stage's travel"
        )
