"""Typed parameters of the adaptive-illumination flow (loadable from YAML with
``scopeflow run adaptive-illumination``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeflow import ComputeProfile
from tasks.compute import get_profile
from tasks.decisions import IlluminationRules, LightSetting
from tasks.inference import BackendConfig

from ._edge_params import MicroscopeConnection
from ._tracking_params import TrackedPosition

__all__ = ["NOISE_THRESHOLD", "AdaptiveIlluminationParams", "StartLight"]

# the classical model thresholded on the frame's noise, each nucleus cut at half its peak
NOISE_THRESHOLD = {"working_radius_px": 4.0, "threshold": "noise", "contrast": 5.0}


class StartLight(BaseModel):
    """The first frame's light at every position (gentle: the policy raises it where needed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exposure_ms: float = Field(10.0, gt=0)
    intensity_percent: float = Field(2.0, gt=0, le=100)


class AdaptiveIlluminationParams(MicroscopeConnection):
    """Image each position's cell at a target SNR with as little light as it needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positions: list[TrackedPosition] = Field(min_length=1, max_length=96)
    objective: str = Field("20x", description="Objective preset (must be in the envelope)")
    channel: str = Field("DAPI", description="The fluorescence channel imaged and adapted")
    z_um: float = 0.0
    target_snr: float = Field(
        10.0, gt=0, description="Cell mean above background, over the background's noise"
    )
    time_points: int = Field(20, ge=1, le=100_000)
    interval_s: float = Field(1.0, gt=0, description="Wall-clock seconds between time points")
    start: StartLight = Field(default_factory=StartLight)
    exposure_range_ms: tuple[float, float] = Field(
        (2.0, 200.0), description="Exposures the policy may choose (inside the envelope's max)"
    )
    intensity_range_percent: tuple[float, float] = Field(
        (0.5, 100.0), description="Intensities the policy may choose (inside the envelope's max)"
    )
    preferred_intensity_percent: float = Field(
        5.0, gt=0, le=100, description="Intensity used while the exposure is within its range"
    )
    margin: float = Field(1.2, ge=1.0, description="Aim this factor above the target SNR")
    deadband: float = Field(0.3, ge=0, description="No change within aim .. aim x (1 + this)")
    max_step: float = Field(4.0, gt=1.0, description="Largest light change per frame (factor)")
    adapt: bool = Field(
        True, description="False: the start light at every frame (a static protocol)"
    )
    model: str = Field("classical", description="Segmentation model on the workers")
    model_options: dict = Field(
        default_factory=lambda: dict(NOISE_THRESHOLD),
        description="The model's options; the default finds dim nuclei beside bright ones and "
        "draws each to its half-maximum edge, so its mean is the nucleus's",
    )
    backend: BackendConfig | None = Field(
        default_factory=BackendConfig,
        description="Where the model runs (Ray actors / Dask workers) unless `profile` is set; "
        "None (and no profile): in this process",
    )
    profile: str | None = Field(None, description="Compute profile for the model's workers")
    deadline_ms: float | None = Field(
        800.0, gt=0, description="Frame ready -> result; later results fall back to the local model"
    )
    fallback_model: str | None = Field("classical", description="Local model for late frames")
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Give a crashed run's id to resume it: no command already run is repeated",
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    output_dir: Path = Path("scopeflow-data")

    @model_validator(mode="after")
    def _rules_make_sense(self) -> AdaptiveIlluminationParams:
        self.rules()  # raises ValueError (shown as a validation error) with the fix
        return self

    def rules(self) -> IlluminationRules:
        return IlluminationRules(
            target_snr=self.target_snr,
            time_points=self.time_points,
            interval_s=self.interval_s,
            channel=self.channel,
            z_um=self.z_um,
            start=LightSetting(self.start.exposure_ms, self.start.intensity_percent),
            exposure_range_ms=self.exposure_range_ms,
            intensity_range_percent=self.intensity_range_percent,
            preferred_intensity_percent=self.preferred_intensity_percent,
            margin=self.margin,
            deadband=self.deadband,
            max_step=self.max_step,
            adapt=self.adapt,
        )

    def compute_profile(self) -> ComputeProfile | None:
        return None if self.profile is None else get_profile(self.profile)

    def position_tuples(self) -> list[tuple[str, float, float]]:
        return [(p.name, p.x_um, p.y_um) for p in self.positions]
