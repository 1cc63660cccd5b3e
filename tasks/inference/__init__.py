"""Inference: segmentation and restoration models, their registry, the backends (Ray actors,
Dask workers) that run them next to the data, and the metrics that score them. A live loop gets
its backend from a compute profile (``backend_for_profile``), as the batch flows get theirs.

Training the shipped networks lives in ``tasks.training``; what it builds on (the networks,
their weight formats and normalisation) is exported here.
"""

from __future__ import annotations

from scopeflow import ObjectTable

from ._apply import restore_planes, segment_planes
from ._backend_core import (
    BackendConfig,
    BackendUnavailable,
    InferenceBackend,
    InferenceError,
    InferenceFuture,
    WorkerLost,
    chunk_indices,
)
from ._bioimageio import export_bioimageio_package
from ._care import (
    DEFAULT_RESTORATION_CHANNELS,
    RESTORATION_WEIGHTS_FORMAT,
    build_restoration_net,
    load_restoration_weights,
    percentile_range,
)
from ._care import DEFAULT_WEIGHTS as RESTORATION_DEFAULT_WEIGHTS
from ._care import PERCENTILES as RESTORATION_PERCENTILES
from ._detection_metrics import detection_scores, detection_scores_at
from ._frame_analysis import analyse_frame, has_frame_extras
from ._make_backend import backend_for_profile, make_backend
from ._measure import background_level, measure_objects
from ._metrics import InstanceScores, instance_scores, iou_matrix, pool_scores
from ._protocol import RestorationModel, SegmentationModel
from ._registry import (
    available_models,
    available_restoration_models,
    load_model,
    load_restoration_model,
    register_model,
)
from ._restoration_metrics import (
    FMD_CONFOCAL_FISH,
    BlurBaseline,
    best_gaussian_blur,
    load_pair,
    psnr,
    ssim,
)
from ._tiling import predict_tiled
from ._unet import CANONICAL_PIXEL_UM, build_unet, labels_from_probabilities, normalize_percentiles
from ._unet import DEFAULT_CHANNELS as UNET_DEFAULT_CHANNELS
from ._unet import DEFAULT_WEIGHTS as UNET_DEFAULT_WEIGHTS
from ._unet import WEIGHTS_FORMAT as UNET_WEIGHTS_FORMAT
from ._virtual_stain import (
    VIRTUAL_STAIN_FORMAT,
    VIRTUAL_STAIN_TRAIN_COMMAND,
    VIRTUAL_STAIN_WEIGHTS,
    VirtualStainNuclei,
)

__all__ = [
    "CANONICAL_PIXEL_UM",
    "DEFAULT_RESTORATION_CHANNELS",
    "FMD_CONFOCAL_FISH",
    "RESTORATION_DEFAULT_WEIGHTS",
    "RESTORATION_PERCENTILES",
    "RESTORATION_WEIGHTS_FORMAT",
    "UNET_DEFAULT_CHANNELS",
    "UNET_DEFAULT_WEIGHTS",
    "UNET_WEIGHTS_FORMAT",
    "VIRTUAL_STAIN_FORMAT",
    "VIRTUAL_STAIN_TRAIN_COMMAND",
    "VIRTUAL_STAIN_WEIGHTS",
    "BackendConfig",
    "BackendUnavailable",
    "BlurBaseline",
    "InferenceBackend",
    "InferenceError",
    "InferenceFuture",
    "InstanceScores",
    "ObjectTable",
    "RestorationModel",
    "SegmentationModel",
    "VirtualStainNuclei",
    "WorkerLost",
    "analyse_frame",
    "available_models",
    "available_restoration_models",
    "backend_for_profile",
    "background_level",
    "best_gaussian_blur",
    "build_restoration_net",
    "build_unet",
    "chunk_indices",
    "detection_scores",
    "detection_scores_at",
    "export_bioimageio_package",
    "has_frame_extras",
    "instance_scores",
    "iou_matrix",
    "labels_from_probabilities",
    "load_model",
    "load_pair",
    "load_restoration_model",
    "load_restoration_weights",
    "make_backend",
    "measure_objects",
    "normalize_percentiles",
    "percentile_range",
    "pool_scores",
    "predict_tiled",
    "psnr",
    "register_model",
    "restore_planes",
    "segment_planes",
    "ssim",
]
