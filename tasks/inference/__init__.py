"""Inference: segmentation (and later restoration) models, their registry, and the backends
(Ray actors, Dask workers) that run them next to the data."""

from __future__ import annotations

from ._backends import (
    BackendConfig,
    BackendUnavailable,
    InferenceBackend,
    InferenceError,
    InferenceFuture,
    make_backend,
)
from ._protocol import SegmentationModel
from ._registry import available_models, load_model, register_model

__all__ = [
    "BackendConfig",
    "BackendUnavailable",
    "InferenceBackend",
    "InferenceError",
    "InferenceFuture",
    "SegmentationModel",
    "available_models",
    "load_model",
    "make_backend",
    "register_model",
]
