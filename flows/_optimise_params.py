"""Typed parameters of the acquisition-optimisation flow (loadable from YAML with
``scopeflow run optimise``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeflow import ConfigurationError
from tasks.decisions import AcquisitionSettings, SamplerKind, SearchSpace, default_startup
from tasks.hardware import SafetyEnvelope
from tasks.qc import QualityScale, WorkerKind

from ._edge_params import MicroscopeConnection
from ._targeted_params import Region

__all__ = ["OptimiseAcquisitionParams", "SettingRange"]


class SettingRange(BaseModel):
    """A searched range, low < high, both positive (searched on a log scale)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float = Field(gt=0, allow_inf_nan=False)
    high: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> SettingRange:
        if self.low >= self.high:
            raise ValueError(f"range low {self.low:g} must be below high {self.high:g}")
        return self

    def pair(self) -> tuple[float, float]:
        return (self.low, self.high)


class OptimiseAcquisitionParams(MicroscopeConnection):
    """Find exposure, intensity and binning that give the best image quality for the light
    spent, by Bayesian optimisation; a grid search over the same ranges is the baseline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: Region = Field(
        default_factory=lambda: Region(x0=500.0, y0=500.0, x1=9_500.0, y1=9_500.0),
        description="Where the trials' fields lie (each trial images a fresh field)",
    )
    field_spacing_um: float = Field(
        400.0,
        gt=0,
        description="Distance between fields: more than a field of view, so no "
        "trial bleaches another's field",
    )
    objective: str = "10x"
    channel: str = "DAPI"
    z_um: float = 0.0
    exposure_ms: SettingRange = Field(default_factory=lambda: SettingRange(low=0.5, high=200.0))
    intensity_pct: SettingRange = Field(default_factory=lambda: SettingRange(low=2.0, high=100.0))
    binnings: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="Camera binnings searched; more than [1] needs the envelope to allow the "
        "camera's Binning property (allowed_properties)",
    )
    grid_exposures: int = Field(8, ge=1, le=64, description="Grid points along exposure")
    grid_intensities: int = Field(5, ge=1, le=64, description="Grid points along intensity")
    run_grid: bool = Field(True, description="Measure the grid baseline in the same run")
    trials: int | None = Field(
        None, ge=1, le=1000, description="Optimiser trials (None: 25 % of the grid's points)"
    )
    sampler: SamplerKind = Field(
        "gp", description="The optimiser's model: 'gp' (Gaussian process) or 'tpe' (optuna TPE)"
    )
    startup_trials: int | None = Field(
        None,
        ge=1,
        description="Random trials before the model proposes (None: a third of the trials)",
    )
    seed: int = Field(0, description="Seed of the optimiser's sampler")
    dose_weight_per_mj: float = Field(
        1.0, ge=0, description="Score = quality - dose_weight_per_mj * light dose (mJ)"
    )
    dose_budget_mj: float | None = Field(
        None, gt=0, description="Stop the run (grid and optimiser together) before this dose"
    )
    cnr_target: float = Field(50.0, gt=0, description="Object contrast-to-noise scoring 0.63")
    min_object_px: float = Field(
        60.0, gt=0, description="Pixels an object needs for the measurement (binning costs it)"
    )
    workers: WorkerKind = Field("ray", description="Where the frames are scored")
    worker_count: int = Field(1, ge=1, le=64)
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Give a crashed run's id to resume it: no trial already run is repeated",
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    output_dir: Path = Path("scopeflow-data")

    @model_validator(mode="after")
    def _enough_fields(self) -> OptimiseAcquisitionParams:
        if any(b < 1 for b in self.binnings) or len(set(self.binnings)) != len(self.binnings):
            raise ValueError(f"binnings {self.binnings}: give distinct binnings of 1 or more")
        need = self.grid_size() * self.run_grid + self.trial_count()
        have = len(self.fields())
        if have < need:
            raise ValueError(
                f"the region holds {have} fields {self.field_spacing_um:g} µm apart but the run "
                f"needs {need} (one per acquisition); widen the region or lower field_spacing_um"
            )
        return self

    def space(self) -> SearchSpace:
        return SearchSpace(self.exposure_ms.pair(), self.intensity_pct.pair(), tuple(self.binnings))

    def grid(self) -> list[AcquisitionSettings]:
        return self.space().grid(self.grid_exposures, self.grid_intensities)

    def grid_size(self) -> int:
        return self.grid_exposures * self.grid_intensities * len(self.binnings)

    def trial_count(self) -> int:
        return self.trials or max(1, self.grid_size() // 4)

    def startup_count(self) -> int:
        return self.startup_trials or default_startup(self.trial_count())

    def quality_scale(self) -> QualityScale:
        return QualityScale(cnr_target=self.cnr_target, min_object_px=self.min_object_px)

    def fields(self) -> list[tuple[float, float]]:
        """Field centres in the region, row by row, ``field_spacing_um`` apart."""
        r, step = self.region, self.field_spacing_um
        nx = math.floor((r.x1 - r.x0) / step) + 1
        ny = math.floor((r.y1 - r.y0) / step) + 1
        return [(r.x0 + i * step, r.y0 + j * step) for j in range(ny) for i in range(nx)]

    def check_envelope(self, envelope: SafetyEnvelope) -> None:
        """Refuse ranges the edge's envelope forbids, naming its limit (nothing has moved)."""
        problems = []
        if self.exposure_ms.high > envelope.max_exposure_ms:
            problems.append(
                f"exposure_ms.high {self.exposure_ms.high:g} is above the envelope's "
                f"max_exposure_ms {envelope.max_exposure_ms:g}"
            )
        if self.intensity_pct.high > envelope.max_intensity_percent:
            problems.append(
                f"intensity_pct.high {self.intensity_pct.high:g} is above the envelope's "
                f"max_intensity_percent {envelope.max_intensity_percent:g}"
            )
        if self.channel not in envelope.allowed_channels:
            problems.append(
                f"channel {self.channel!r} is not in the envelope's allowed_channels "
                f"{sorted(envelope.allowed_channels)}"
            )
        if envelope.allowed_objectives and self.objective not in envelope.allowed_objectives:
            problems.append(
                f"objective {self.objective!r} is not in the envelope's allowed_objectives "
                f"{sorted(envelope.allowed_objectives)}"
            )
        if self.binnings != [1] and "Binning" not in envelope.allowed_properties.get(
            "Camera", frozenset()
        ):
            problems.append(
                f"binnings {self.binnings} need Camera.Binning in the envelope's allowed_properties"
            )
        r = self.region
        for x, y, corner in ((r.x0, r.y0, "x0/y0"), (r.x1, r.y1, "x1/y1")):
            if not envelope.inside(x, y, self.z_um):
                problems.append(
                    f"region corner {corner} ({x:g}, {y:g}, z {self.z_um:g}) is outside the "
                    f"envelope's x_limits_um {envelope.x_limits_um} / y_limits_um "
                    f"{envelope.y_limits_um} / z_limits_um {envelope.z_limits_um}"
                )
        if problems:
            raise ConfigurationError(
                "the params do not fit the edge's safety envelope: "
                + "; ".join(problems)
                + ". Narrow the ranges in the params file (or widen the envelope file); "
                "nothing was acquired"
            )
