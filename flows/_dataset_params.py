"""Parameters of the batch flows (segment / restore a stored OME-Zarr), validated up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DatasetParams", "RestoreDatasetParams", "SegmentDatasetParams"]


class DatasetParams(BaseModel):
    """What every batch flow needs: the image, the model, where to run, how to tile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: Path = Field(..., description="an OME-Zarr image group (journal sN.ome.zarr, ...)")
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options for the model factory"
    )
    profile: str = Field("local", description="compute profile name (`scopeflow profiles`)")
    tile: int = Field(512, ge=16, description="tile (and output chunk) size in pixels")
    tiles_per_task: int | None = Field(
        None, ge=1, description="tiles per Prefect task (default: about 16 tasks per run)"
    )
    pixel_size_um: float | None = Field(
        None, gt=0, description="override the image's pixel size (µm) given to the model"
    )
    work_dir: Path | None = Field(
        None, description="resume ledger folder (default: beside the output, hidden)"
    )
    keep_work: bool = Field(False, description="keep the ledger after a complete run")


class SegmentDatasetParams(DatasetParams):
    """Segment every plane of ``image`` into ``image/labels/<label_name>``."""

    model: str = Field("classical", min_length=1, description="segmentation model name")
    label_name: str = Field("nuclei", min_length=1, description="name under image/labels/")
    halo: int = Field(32, ge=2, description="pixels of context on each side of a tile")
    merge_iou: float = Field(
        0.5, gt=0, le=1, description="IoU in a seam band above which two labels are one object"
    )


class RestoreDatasetParams(DatasetParams):
    """Restore every plane of ``image`` into a new OME-Zarr image ``output``."""

    model: str = Field("gaussian", min_length=1, description="restoration model name")
    output: Path | None = Field(
        None, description="new image store (default: <image>-<model>.ome.zarr beside it)"
    )
    halo: int = Field(16, ge=0, description="pixels of context on each side of a tile")
    dtype: Literal["float32", "same"] = Field(
        "float32", description="float32, or the input's dtype (rounded and clipped)"
    )
