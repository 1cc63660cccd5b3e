"""The Prefect event names and resource ids scopeflow emits (automations match on them)."""

from __future__ import annotations

__all__ = [
    "ACQUISITION_FAILED",
    "ACQUISITION_FINISHED",
    "ACQUISITION_STARTED",
    "CONVERSION_FINISHED",
    "QC_ANOMALY",
    "acquisition_resource",
    "image_resource",
]

ACQUISITION_STARTED = "scopeflow.acquisition.started"
ACQUISITION_FINISHED = "scopeflow.acquisition.finished"
ACQUISITION_FAILED = "scopeflow.acquisition.failed"
QC_ANOMALY = "scopeflow.qc.anomaly"
CONVERSION_FINISHED = "scopeflow.conversion.finished"  # emitted by flows/convert.py


def acquisition_resource(run_id: str) -> str:
    """``scopeflow.acquisition.<run id>``: one resource per acquisition run."""
    return f"scopeflow.acquisition.{run_id}"


def image_resource(image: str) -> str:
    """``scopeflow.image.<path or name>``: the resource of one image (as conversions use)."""
    return f"scopeflow.image.{image}"
