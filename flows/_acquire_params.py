"""Typed parameters of the acquisition flow (``scopeflow run acquire --sequence FILE.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from scopeflow import ComputeProfile
from tasks.compute import get_profile
from tasks.inference import BackendConfig
from tasks.storage import Compression

from ._edge_params import MicroscopeConnection

__all__ = ["AcquireParams", "AnalysisHook"]


class AnalysisHook(BaseModel):
    """A model from the registry run on the workers while the sequence acquires: on every frame
    (``scope: frame``) or on one frame per position visit (``scope: position``: the
    ``channel``'s middle z plane at each time point and field). Results are measured objects
    (count, areas, intensities), logged per frame in ``decisions.jsonl`` and summarised per
    position; nothing is sent back to the microscope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("classical", description="Registered segmentation model (measure: on)")
    model_options: dict = Field(default_factory=dict)
    scope: Literal["frame", "position"] = "position"
    channel: str | None = Field(
        None, description="Position scope: the channel analysed (default: the sequence's first)"
    )
    backend: BackendConfig | None = Field(
        default_factory=BackendConfig,
        description="Where the model runs (Ray actors / Dask workers); None: in this process",
    )
    profile: str | None = Field(
        None, description="Compute profile of the workers, by name; used instead of `backend`"
    )
    deadline_ms: float | None = Field(
        None, gt=0, description="Frame ready -> result; later frames go to `fallback_model`"
    )
    fallback_model: str | None = Field(None, description="Local model for late frames")

    def compute_profile(self) -> ComputeProfile | None:
        return None if self.profile is None else get_profile(self.profile)


class AcquireParams(MicroscopeConnection):
    """Run a useq-schema MDASequence through an edge agent into OME-Zarr images with its axes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sequence: Path = Field(description="The useq-schema MDASequence, a YAML or JSON file")
    fast: bool = Field(
        False,
        description="Rehearsal: every time-plan interval becomes 0 and exposures at most "
        "`fast_exposure_ms`; positions, channels, z and the event order stay as written",
    )
    fast_exposure_ms: float = Field(1.0, gt=0, description="Longest exposure under `fast`")
    analysis: AnalysisHook | None = Field(None, description="Optional analysis on the workers")
    compression: Compression = "zstd"
    flush_every_s: float = Field(
        1.0, gt=0, description="How often the stores' metadata catch up with the frames"
    )
    on_error: str | None = Field(
        None, description="Failure policy of the events, e.g. 'retry:1:skip' (edge default: abort)"
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Give a crashed run's id to resume it: the edge runs the sequence once",
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    frames_from: Literal["auto", "journal", "stream"] = Field(
        "auto",
        description="Where the stores read frames: the edge's journal when it is on this host "
        "(auto), or the edge's stream (frames it journaled before announcing them)",
    )
    output_dir: Path = Path("scopeflow-data")
