"""Typed parameters of the plate-screen flow (what the Prefect UI shows and validates)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scopeflow import ComputeProfile
from tasks.compute import get_profile
from tasks.decisions import SelectionRules
from tasks.inference import BackendConfig

from ._edge_params import MicroscopeConnection
from ._targeted_params import DetailSettings, OverviewSettings

__all__ = ["FieldGrid", "PlateScreenParams"]


class FieldGrid(BaseModel):
    """The overview fields in each well: a rows x columns grid of the overview objective's
    field of view around the well's centre (useq's ``GridRowsColumns``), tiles overlapping
    by ``overlap`` so that a nucleus cut by one field's border is whole in its neighbour."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(2, ge=1, le=20)
    columns: int = Field(2, ge=1, le=20)
    overlap: float = Field(0.1, ge=0, lt=0.5, description="Fraction of the field tiles share")


class PlateScreenParams(MicroscopeConnection):
    """A multi-well plate: which plate, where it lies on the stage, which wells, and the
    targeted imaging (overview fields -> targets -> detail z-stacks) done in each well."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plate: str = Field("96-well", description="Plate type, a key of useq's plate registry")
    calibration: dict[str, tuple[float, float]] = Field(
        description=(
            "Measured stage centres (µm) of A1 and at least one other well, best the opposite "
            "corner, e.g. {A1: [14380, 74240], H12: [113380, 11240]}"
        )
    )
    wells: list[str] | None = Field(
        None, description="Wells to image by name (e.g. [A1, B3]); all wells when unset"
    )
    fields: FieldGrid = FieldGrid()
    overview: OverviewSettings = OverviewSettings()
    detail: DetailSettings = DetailSettings()
    rules: SelectionRules = Field(
        default_factory=SelectionRules, description="Which detections become targets, per well"
    )
    pitch_tolerance: float = Field(
        0.02, gt=0, lt=0.5, description="Largest accepted |measured / nominal pitch - 1|"
    )
    model: str = Field("classical", description="Segmentation model (registry name)")
    backend: BackendConfig = Field(
        default_factory=BackendConfig, description="Where the model runs unless `profile` is set"
    )
    profile: str | None = Field(
        None, description="Compute profile the model's workers run on (used instead of backend)"
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = Field(
        "tcp",
        description=(
            "How frames reach the flow; tcp by default: a plate's hundreds of fields are "
            "acquired faster than the workers segment them, and the edge's shared-memory ring "
            "(16 frames) would be overwritten before a worker reads a reference"
        ),
    )
    output_dir: Path = Path("scopeflow-data")
    focus_z_um: float = Field(0.0, description="Focus position the z-stacks are centred on")
    score_against_truth: bool = Field(
        True, description="Ask a simulated edge for ground truth and score the targets per well"
    )

    @field_validator("wells")
    @classmethod
    def _some_wells(cls, wells: list[str] | None) -> list[str] | None:
        if wells is not None and not wells:
            raise ValueError("wells is empty: name at least one well, or leave it unset for all")
        return wells

    def compute_profile(self) -> ComputeProfile | None:
        """The profile named by ``profile`` (None when unset)."""
        return None if self.profile is None else get_profile(self.profile)
