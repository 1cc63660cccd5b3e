"""Inference: segmentation (and later restoration) models, their registry, and the backends
(Ray actors, Dask workers) that run them next to the data."""

from __future__ import annotations

from scopeflow import ObjectTable

from ._backends import (
    BackendConfig,
    BackendUnavailable,
    InferenceBackend,
    InferenceError,
    InferenceFuture,
    make_backend,
)
from ._measure import measure_objects
from ._protocol import RestorationModel, SegmentationModel
from ._registry import (
    available_models,
    available_restoration_models,
    load_model,
    load_restoration_model,
    register_model,
)

__all__ = [
    "BackendConfig",
    "BackendUnavailable",
    "InferenceBackend",
    "InferenceError",
    "InferenceFuture",
    "ObjectTable",
    "RestorationModel",
    "SegmentationModel",
    "available_models",
    "available_restoration_models",
    "load_model",
    "load_restoration_model",
    "make_backend",
    "measure_objects",
    "register_model",
]
