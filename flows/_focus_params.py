"""Typed parameters of the autofocus time-lapse (loadable from YAML with
``scopeflow run autofocus``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from ._edge_params import MicroscopeConnection
from ._event_params import ChannelExposure
from ._focus import AutofocusSettings
from ._tracking_params import TrackedPosition

__all__ = ["FocusTimelapseParams"]


class FocusTimelapseParams(MicroscopeConnection):
    """A time-lapse at fixed positions that finds focus before every time point (or every
    ``autofocus.every``-th), against any edge; on the simulator it is scored on the truth."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positions: list[TrackedPosition] = Field(min_length=1, max_length=96)
    objective: str = Field("20x", description="Objective preset (must be in the envelope)")
    start_z_um: float = Field(0.0, description="Where the first autofocus search is centred")
    duration_s: float = Field(60.0, gt=0, le=7 * 86_400, description="Wall-clock run length")
    interval_s: float = Field(1.0, gt=0, description="Wall-clock seconds between time points")
    imaging: list[ChannelExposure] = Field(
        default_factory=lambda: [ChannelExposure(channel="DAPI", exposure_ms=10.0)],
        min_length=1,
        description="What each time point images at the focus found",
    )
    autofocus: AutofocusSettings = Field(default_factory=AutofocusSettings)
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Give a crashed run's id to resume it: no command already run is repeated",
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    output_dir: Path = Path("scopeflow-data")

    @model_validator(mode="after")
    def _fits(self) -> FocusTimelapseParams:
        if self.interval_s > self.duration_s:
            raise ValueError(
                f"interval_s {self.interval_s:g} is longer than duration_s {self.duration_s:g}; "
                "shorten the interval or lengthen the run"
            )
        return self

    @property
    def time_points(self) -> int:
        return int(self.duration_s // self.interval_s) + 1

    def imaging_plan(self) -> tuple[tuple[str, float], ...]:
        return tuple((c.channel, c.exposure_ms) for c in self.imaging)
