"""Typed parameters of the targeted-imaging flow (what the Prefect UI shows and validates)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeflow import ComputeProfile
from tasks.compute import get_profile
from tasks.decisions import SelectionRules
from tasks.inference import BackendConfig

from ._edge_params import MicroscopeConnection
from ._focus import AutofocusSettings

__all__ = ["DetailSettings", "OverviewSettings", "Region", "TargetedImagingParams"]


class Region(BaseModel):
    """A rectangle on the stage, µm."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x0: float
    y0: float
    x1: float
    y1: float

    @model_validator(mode="after")
    def _ordered(self) -> Region:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"region ({self.x0}, {self.y0}, {self.x1}, {self.y1}) is empty")
        return self

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


class OverviewSettings(BaseModel):
    """The low-magnification scan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    objective: str = "10x"
    channel: str = "DAPI"
    exposure_ms: float = Field(20.0, gt=0)
    overlap: float = Field(0.1, ge=0, lt=0.5, description="Fraction of the field tiles share")


class DetailSettings(BaseModel):
    """The high-magnification acquisition at each target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    objective: str = "40x"
    channel: str = "DAPI"
    exposure_ms: float = Field(30.0, gt=0)
    z_range_um: float = Field(4.0, ge=0, description="Total z range around the focus")
    z_step_um: float = Field(2.0, gt=0)

    def z_offsets(self) -> list[float]:
        if self.z_range_um == 0:
            return [0.0]
        n = round(self.z_range_um / self.z_step_um) + 1
        half = self.z_range_um / 2
        return [-half + i * self.z_step_um for i in range(n)]


class TargetedImagingParams(MicroscopeConnection):
    """Everything a targeted-imaging run needs; the same for the simulator and a microscope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: Region
    overview: OverviewSettings = OverviewSettings()
    detail: DetailSettings = DetailSettings()
    rules: SelectionRules = SelectionRules()
    model: str = Field("classical", description="Segmentation model (registry name)")
    backend: BackendConfig = Field(
        default_factory=BackendConfig, description="Where the model runs unless `profile` is set"
    )
    profile: str | None = Field(
        None,
        description=(
            "Compute profile the model's workers run on, by name (local, local-ray, or one of "
            "[compute_profiles] in the settings file: slurm, pbs, ray/KubeRay); used instead of "
            "`backend` when set"
        ),
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    output_dir: Path = Path("scopeflow-data")
    focus_z_um: float = Field(0.0, description="Focus position the z-stacks are centred on")
    autofocus: AutofocusSettings | None = Field(
        None,
        description="Find focus at each target (a search around the last focus found, first "
        "focus_z_um, at the detail objective, scored on the autofocus workers) and centre its "
        "z-stack there; None: every stack around focus_z_um",
    )
    score_against_truth: bool = Field(
        True, description="Ask a simulated edge for ground truth and score the targets"
    )

    def compute_profile(self) -> ComputeProfile | None:
        """The profile named by ``profile`` (None when unset); ConfigurationError listing the
        available ones when there is no such profile."""
        return None if self.profile is None else get_profile(self.profile)
