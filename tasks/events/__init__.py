"""Prefect events of acquisitions and QC, and the relay that turns an edge's notices into them.

Automations and deployment triggers (``deployments/prefect.yaml``,
``deployments/automations.yaml``) react to these names.
"""

from __future__ import annotations

from ._automations import AutomationsFile, apply_automations, load_automations
from ._emit import (
    emit,
    emit_acquisition_failed,
    emit_acquisition_finished,
    emit_acquisition_started,
    emit_qc_anomaly,
)
from ._names import (
    ACQUISITION_FAILED,
    ACQUISITION_FINISHED,
    ACQUISITION_STARTED,
    CONVERSION_FINISHED,
    QC_ANOMALY,
    acquisition_resource,
    image_resource,
)

__all__ = [
    "ACQUISITION_FAILED",
    "ACQUISITION_FINISHED",
    "ACQUISITION_STARTED",
    "CONVERSION_FINISHED",
    "QC_ANOMALY",
    "AutomationsFile",
    "acquisition_resource",
    "apply_automations",
    "emit",
    "emit_acquisition_failed",
    "emit_acquisition_finished",
    "emit_acquisition_started",
    "emit_qc_anomaly",
    "image_resource",
    "load_automations",
]
