"""Parameters of the ``em-qc`` flow (QC of a watched folder as a microscope writes into it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EMQCParams"]


class EMQCParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    folder: Path = Field(description="The folder the microscope writes into (a share is fine)")
    output: Path = Field(description="Where the OME-Zarr region stores and QC records go")
    profile: str = Field(
        "zeiss-sem",
        description="Vendor profile: zeiss-sem, thermo-tiff, thermo-mrc, ome-tiff or any",
    )
    workers: Literal["threads", "ray", "dask"] = "threads"
    worker_count: int = Field(2, ge=1)
    config: Path | None = Field(None, description="QC thresholds (TOML/YAML), see QCConfig")
    learn_images: int | None = Field(None, ge=3, description="Override the config's")
    idle_stop_s: float = Field(30.0, gt=0, description="End when nothing new arrived for this long")
    expected_images: int | None = Field(
        None, ge=1, description="End once this many images came (an acquisition of known size)"
    )
    stable_s: float | None = Field(None, ge=0, description="Override the profile's stable_s")
    write_stores: bool = True
    run_id: str | None = None
    emit_events: bool = Field(
        True,
        description="Each anomaly as a Prefect event (scopeflow.qc.anomaly) that automations "
        "react to (notify a person; deployments/prefect.yaml)",
    )
    anomaly_hooks: tuple[str, ...] = Field(
        (),
        description="'package.module:callable' called with each anomaly's Verdict (e.g. one "
        "that emits a Prefect event), importable where the flow runs",
    )
