"""The safety envelope of the external devices: which pumps and patterning devices events may
drive (an allow-list: a device not named here is refused), and each one's limits.

- a pump run: a reservoir of ``allowed_reservoirs``, at most ``max_volume_ul`` per run and
  ``max_flow_ul_per_min``; over all runs into one sample at most ``max_total_volume_ul`` (and
  ``max_total_volume_ul_by_reservoir`` per reservoir), counted by `PumpLedger`;
- a stimulation: at most ``max_intensity_percent``, ``max_duration_ms`` and ``max_dose_mj``
  per pattern, every spot wholly inside the camera's field of view at the stage position it is
  fired at (the patterning device is registered to that field), and its light dose (the
  device's ``power_mw`` over the whole field at 100 %, times the lit fraction of the field,
  intensity and duration) counted in the envelope's light dose budget like an exposure's.

Each check raises `EnvelopeViolation` naming the limit as ``devices.<kind>.<device>.<field>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeflow import EnvelopeViolation, PumpRun, Stimulate

__all__ = ["DeviceLimits", "PumpLimits", "StimulatorLimits"]

T = TypeVar("T")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PumpLimits(_Frozen):
    """What one syringe pump may do per run."""

    allowed_reservoirs: frozenset[str] = Field(
        min_length=1, description="Reservoirs (syringes) a run may draw from"
    )
    max_volume_ul: float = Field(gt=0, description="Largest volume of one run, µL")
    max_flow_ul_per_min: float = Field(gt=0, description="Fastest flow rate, µL/min")
    max_total_volume_ul: float | None = Field(
        None,
        gt=0,
        description="Most volume all its runs may put into one sample (one data dir), µL; "
        "none: no cumulative limit",
    )
    max_total_volume_ul_by_reservoir: Mapping[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Most volume from each named reservoir into one sample, µL",
    )

    @model_validator(mode="after")
    def _known_reservoirs(self) -> PumpLimits:
        unknown = sorted(set(self.max_total_volume_ul_by_reservoir) - self.allowed_reservoirs)
        if unknown:
            raise ValueError(
                f"max_total_volume_ul_by_reservoir names {unknown}, which are not in "
                f"allowed_reservoirs {sorted(self.allowed_reservoirs)}; add them there or "
                "remove them"
            )
        return self


class StimulatorLimits(_Frozen):
    """What one patterning device (DMD, SLM) may light per pattern."""

    power_mw: float = Field(
        ge=0, description="Light power at the sample over the whole field at 100 %, mW"
    )
    max_intensity_percent: float = Field(100.0, ge=0, le=100)
    max_duration_ms: float = Field(gt=0, description="Longest pattern, ms")
    max_dose_mj: float = Field(gt=0, description="Largest light dose of one pattern, mJ")


class DeviceLimits(_Frozen):
    """The external devices events may drive, by device label; none by default."""

    pumps: Mapping[str, PumpLimits] = Field(default_factory=dict)
    stimulators: Mapping[str, StimulatorLimits] = Field(default_factory=dict)

    def check(
        self,
        action: PumpRun | Stimulate,
        stage: tuple[float, float] | None,
        field_um: tuple[float, float] | None,
        where: str,
    ) -> float:
        """Refuse ``action`` unless its device is allowed and it keeps to the device's limits;
        returns its light dose in mJ (0 for a pump run)."""
        if isinstance(action, PumpRun):
            self._check_pump(action, where)
            return 0.0
        return self._check_stimulation(action, stage, field_um, where)

    def _check_pump(self, run: PumpRun, where: str) -> None:
        limits = _allowed(self.pumps, run.device, "pumps", "pump", where)
        name = f"devices.pumps.{run.device}"
        if run.reservoir not in limits.allowed_reservoirs:
            raise EnvelopeViolation(
                f"{where}: reservoir {run.reservoir!r} is not in {name}.allowed_reservoirs "
                f"{sorted(limits.allowed_reservoirs)}; use one of them or add it to the envelope",
                limit=f"{name}.allowed_reservoirs",
                value=run.reservoir,
            )
        _at_most(
            run.volume_ul, limits.max_volume_ul, f"{name}.max_volume_ul", "volume", "µL", where
        )
        _at_most(
            run.flow_ul_per_min,
            limits.max_flow_ul_per_min,
            f"{name}.max_flow_ul_per_min",
            "flow rate",
            "µL/min",
            where,
        )

    def _check_stimulation(
        self,
        stimulate: Stimulate,
        stage: tuple[float, float] | None,
        field_um: tuple[float, float] | None,
        where: str,
    ) -> float:
        limits = _allowed(self.stimulators, stimulate.device, "stimulators", "device", where)
        name = f"devices.stimulators.{stimulate.device}"
        _at_most(
            stimulate.intensity,
            limits.max_intensity_percent,
            f"{name}.max_intensity_percent",
            "intensity",
            "%",
            where,
        )
        _at_most(
            stimulate.duration_ms,
            limits.max_duration_ms,
            f"{name}.max_duration_ms",
            "duration",
            "ms",
            where,
        )
        if stage is None or field_um is None:
            raise EnvelopeViolation(
                f"{where}: the stage position or the field of view is unknown, so the pattern "
                "cannot be checked to lie inside the field; give the event an x_pos and y_pos",
                limit=f"{name}.field_of_view",
                value=None,
            )
        half_w, half_h = field_um[0] / 2, field_um[1] / 2
        for k, spot in enumerate(stimulate.spots):
            dx, dy = abs(spot.x_um - stage[0]), abs(spot.y_um - stage[1])
            if dx + spot.radius_um > half_w or dy + spot.radius_um > half_h:
                raise EnvelopeViolation(
                    f"{where}: spot {k} at ({spot.x_um:g}, {spot.y_um:g}) µm, radius "
                    f"{spot.radius_um:g} µm, is not wholly inside the field of view "
                    f"({field_um[0]:.4g} x {field_um[1]:.4g} µm around the stage at "
                    f"({stage[0]:g}, {stage[1]:g})); move the stage to the cell first (the "
                    "event's x_pos, y_pos) or make the spot smaller",
                    limit=f"{name}.field_of_view",
                    value=[spot.x_um, spot.y_um, spot.radius_um],
                )
        lit = min(1.0, stimulate.area_um2() / (field_um[0] * field_um[1]))
        dose = limits.power_mw * lit * stimulate.intensity / 100 * stimulate.duration_ms / 1000
        _at_most(dose, limits.max_dose_mj, f"{name}.max_dose_mj", "light dose", "mJ", where)
        return dose


def _allowed(table: Mapping[str, T], device: str, kind: str, what: str, where: str) -> T:
    if device not in table:
        raise EnvelopeViolation(
            f"{where}: {what} {device!r} is not in the envelope's devices.{kind} "
            f"{sorted(table)}; use one of them, or add it with its limits to the envelope file",
            limit=f"devices.{kind}",
            value=device,
        )
    return table[device]


def _at_most(value: float, maximum: float, limit: str, what: str, unit: str, where: str) -> None:
    if not math.isfinite(value) or value > maximum:
        raise EnvelopeViolation(
            f"{where}: {what} {value:.6g} {unit} exceeds the envelope's {limit} {maximum:g}; "
            f"lower the {what} or raise {limit}",
            limit=limit,
            value=value if math.isfinite(value) else str(value),
        )
