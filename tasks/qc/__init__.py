"""Quality control of images as they are acquired: SEM/TEM tiles from a watched folder, or a
light microscope's frames in any live flow.

Per image, on Ray/Dask workers or threads (``QCWorkers``, a backend of the closed-loop core's
``Analyzer``): focus, astigmatism, SNR, brightness, contrast, saturation, charging streaks,
scan-line faults; between images (``TileRegistry``): drift against the overlapping neighbours
(or the previous frame at the same place) and the overlap's consistency. ``QCJudge`` holds
each image to absolute limits (``QCConfig``, from a TOML/YAML file) and to the run's own
baseline, learned from its first images with robust statistics, and gives a ``Verdict`` (ok /
warn / fail, with each metric's value and threshold). ``run_qc`` runs it all over a frame
source and calls ``on_anomaly`` once per image at the alert level.

``EMMosaicSimulator`` makes SEM mosaics with injected faults and their ground truth, and
``score_verdicts`` / ``simulate_and_judge`` measure recall per fault and false alarms.
"""

from __future__ import annotations

from ._config import DEFAULT_RULES, AlertLevel, MetricRule, QCConfig
from ._em_sim import FAULTS, EMMosaicSimulator, Fault, SimTile, write_sem_tiff
from ._evaluate import FAULT_METRICS, Score, TileFile, score_verdicts, simulate_and_judge
from ._metrics import ImageMetrics, MetricsRequest, measure_image, measure_payload
from ._object_quality import ObjectQuality, QualityScale, measure_object_quality
from ._pairs import PairMetrics, TilePlacement, TileRegistry
from ._runner import QCReport, run_qc
from ._sharpness import (
    FocusScore,
    brenner,
    focus_score,
    measure_focus_payload,
    normalized_variance,
)
from ._verdict import Level, MetricCheck, QCJudge, Verdict, verdict_id
from ._workers import QCWorkers, WorkerKind

__all__ = [
    "DEFAULT_RULES",
    "FAULTS",
    "FAULT_METRICS",
    "AlertLevel",
    "EMMosaicSimulator",
    "Fault",
    "FocusScore",
    "ImageMetrics",
    "Level",
    "MetricCheck",
    "MetricRule",
    "MetricsRequest",
    "ObjectQuality",
    "PairMetrics",
    "QCConfig",
    "QCJudge",
    "QCReport",
    "QCWorkers",
    "QualityScale",
    "Score",
    "SimTile",
    "TileFile",
    "TilePlacement",
    "TileRegistry",
    "Verdict",
    "WorkerKind",
    "brenner",
    "focus_score",
    "measure_focus_payload",
    "measure_image",
    "measure_object_quality",
    "measure_payload",
    "normalized_variance",
    "run_qc",
    "score_verdicts",
    "simulate_and_judge",
    "verdict_id",
    "write_sem_tiff",
]
