"""Typed parameters of the offline tracking flow (``track-dataset``), validated up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrackDatasetParams"]


class TrackDatasetParams(BaseModel):
    """Track a stored time-lapse into a Cell Tracking Challenge ``RES`` folder.

    With ``labels`` (per-frame instance masks) only linking is done; without, each frame is
    segmented with ``model`` first, on the workers of ``profile`` when one is named.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    movie: Path = Field(
        ..., description="OME-Zarr image with a t axis, a TIFF stack or a folder of frame TIFFs"
    )
    out: Path = Field(..., description="the RES folder to write (new or empty)")
    labels: Path | None = Field(
        None, description="per-frame instance masks in the same forms: link only, no model"
    )
    model: str = Field("classical", min_length=1, description="segmentation model name")
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options for the model factory"
    )
    profile: str | None = Field(
        None,
        description="compute profile whose workers segment the frames (`scopeflow profiles`); "
        "None segments them in this process",
    )
    channel: int | None = Field(
        None, ge=0, description="channel index (needed when the movie has several)"
    )
    z: int | None = Field(None, ge=0, description="z plane index (needed when it has several)")
    position: int | None = Field(
        None, ge=0, description="series / position index (bioformats2raw, multi-series files)"
    )
    pixel_size_um: float | None = Field(
        None, gt=0, description="override the movie's pixel size (µm) given to the model"
    )
    min_overlap: float = Field(
        0.1,
        gt=0,
        le=1,
        description="least IoU for a link; least share of a daughter inside its mother",
    )
    ground_truth: Path | None = Field(
        None, description="a CTC ground-truth folder (with TRA/) to score the result against"
    )
