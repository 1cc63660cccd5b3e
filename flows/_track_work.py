"""What runs on the workers of ``track-dataset``: segment a group of frames of a stored movie.

Each worker reads its own frames from the movie (``Movie.frame``: by reference, never shipped)
and writes their labels into the run's work array (one chunk per frame, so workers never share
a chunk); only counts come back. The model is loaded once per worker process and kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.storage import Movie

from ._dataset_work import ModelSpec, _model

__all__ = ["FrameDone", "FrameSegmentContext", "segment_frames"]


@dataclass(frozen=True)
class FrameSegmentContext:
    """What a worker needs besides the frame numbers."""

    movie: Movie
    labels: str  # the (t, y, x) int32 zarr work array
    model: ModelSpec
    pixel_size_um: float | None


@dataclass(frozen=True)
class FrameDone:
    t: int
    objects: int
    model_s: float
    model: str
    model_version: str


def segment_frames(ctx: FrameSegmentContext, frames: list[int]) -> list[FrameDone]:
    """Segment each frame ``t`` of the movie into ``labels[t]``."""
    import zarr

    model = _model(ctx.model)
    labels: Any = zarr.open_array(ctx.labels, mode="r+")
    out = []
    for t in frames:
        image = ctx.movie.frame(t)
        started = time.perf_counter()
        result = np.asarray(model.segment(image, pixel_size_um=ctx.pixel_size_um))
        model_s = time.perf_counter() - started
        if result.shape != image.shape:
            raise ValueError(
                f"model {ctx.model.name!r} returned labels of shape {result.shape} for frame {t} "
                f"of shape {image.shape}; labels must match the frame"
            )
        labels[t] = result.astype(np.int32, copy=False)
        out.append(
            FrameDone(
                t,
                int(np.unique(result[result > 0]).size),
                model_s,
                str(getattr(model, "name", ctx.model.name)),
                str(getattr(model, "version", "")),
            )
        )
    return out
