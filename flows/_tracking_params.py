"""Typed parameters of the tracking flow (loadable from YAML with ``scopeflow run tracking``)."""

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
from ._targeted_params import OverviewSettings, Region

__all__ = ["PositionsFromOverview", "TrackedPosition", "TrackingParams"]


class TrackedPosition(BaseModel):
    """A stage position (µm) whose cell nearest the centre is followed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    x_um: float
    y_um: float


class PositionsFromOverview(BaseModel):
    """Where to look for the cells to follow: targeted imaging's overview phase (tiles over
    ``region`` at the overview objective, segmented on the run's workers, detections merged
    and filtered by ``rules``), then up to ``cells`` of its targets, each at least
    ``min_separation_um`` from those chosen before it (their fields would overlap)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: Region
    overview: OverviewSettings = OverviewSettings()
    rules: SelectionRules = SelectionRules()
    cells: int = Field(2, ge=1, le=96, description="How many cells to follow")
    min_separation_um: float = Field(
        200.0, ge=0, description="Closer to a cell already chosen: skipped"
    )


class TrackingParams(MicroscopeConnection):
    """Multi-position live tracking: segment, link, re-centre on the followed cell."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positions: list[TrackedPosition] | Literal["from_overview"] = Field(
        description=(
            "The positions to follow, or 'from_overview': found by an overview scan "
            "(`overview` says where and how)"
        )
    )
    overview: PositionsFromOverview | None = Field(
        None, description="With positions: from_overview, the scan that finds the cells"
    )
    objective: str = Field("20x", description="Objective preset (must be in the envelope)")
    channel: str = "DAPI"
    exposure_ms: float = Field(10.0, gt=0)
    z_um: float = 0.0
    time_points: int = Field(100, ge=2, le=100_000)
    interval_s: float = Field(1.0, gt=0, description="Wall-clock seconds between time points")
    model: str = Field("classical", description="Segmentation model on the workers")
    model_options: dict = Field(default_factory=lambda: {"working_radius_px": 4.0})
    backend: BackendConfig | None = Field(
        default_factory=BackendConfig,
        description=(
            "Where the model runs (Ray actors / Dask workers) unless `profile` is set; None "
            "(and no profile): in this process"
        ),
    )
    profile: str | None = Field(
        None,
        description=(
            "Compute profile the model's workers run on, by name (local, local-ray, or one of "
            "[compute_profiles] in the settings file: slurm, pbs, ray/KubeRay); used instead of "
            "`backend` when set"
        ),
    )
    deadline_ms: float | None = Field(
        500.0, gt=0, description="Frame ready -> result; later results fall back to the local model"
    )
    fallback_model: str | None = Field("classical", description="Local model for late frames")
    max_step_um: float = Field(25.0, gt=0, description="Farthest one re-centring moves")
    deadband_um: float = Field(1.0, ge=0, description="Closer than this: the stage stays")
    link_distance_um: float = Field(15.0, gt=0, description="Farthest a cell moves per step")
    on_lost: Literal["reacquire", "drop"] = "reacquire"
    autofocus: AutofocusSettings | None = Field(
        None,
        description="Find each position's focus (a search around z_um, scored on the "
        "autofocus workers) before its first time point, and track there; None: all at z_um",
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Give a crashed run's id to resume it: no command already run is repeated",
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    output_dir: Path = Path("scopeflow-data")

    @model_validator(mode="after")
    def _positions_given_once(self) -> TrackingParams:
        if self.positions == "from_overview":
            if self.overview is None:
                raise ValueError(
                    "positions: from_overview needs `overview` (at least its `region`: x0, y0, "
                    "x1, y1 in µm) to know where to scan"
                )
            if self.backend is None and self.profile is None:
                raise ValueError(
                    "positions: from_overview segments the overview on the run's workers: set "
                    "`backend` (e.g. {kind: ray}) or `profile`"
                )
        else:
            if not 1 <= len(self.positions) <= 96:
                raise ValueError(f"give 1 to 96 positions, not {len(self.positions)}")
            if self.overview is not None:
                raise ValueError(
                    "`overview` is used only with positions: from_overview; remove it, or set "
                    "positions: from_overview instead of the list"
                )
        return self

    def tracked_positions(self) -> list[TrackedPosition]:
        """The positions, once known (after the overview when they come from one)."""
        if self.positions == "from_overview":
            raise ValueError("the positions come from the overview, which has not run yet")
        return self.positions

    def compute_profile(self) -> ComputeProfile | None:
        """The profile named by ``profile`` (None when unset); ConfigurationError listing the
        available ones when there is no such profile."""
        return None if self.profile is None else get_profile(self.profile)
