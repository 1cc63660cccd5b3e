"""Emit scopeflow's Prefect events: acquisitions started / finished / failed, QC anomalies.

Emitted where Prefect is: by the flows that run an acquisition (they know the run id, the stores
and the provenance), by QC, and by `EdgeEventRelay` for acquisitions no flow started. The edge
agent itself never imports Prefect: it runs on the acquisition PC, which need not reach the
Prefect API, and its notices (``CommandDone``, ``EventFailed``) already carry what the relay
needs. Emitting never raises into the caller: an event that cannot be sent is logged, and the
acquisition goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ._names import (
    ACQUISITION_FAILED,
    ACQUISITION_FINISHED,
    ACQUISITION_STARTED,
    QC_ANOMALY,
    acquisition_resource,
    image_resource,
)

__all__ = [
    "emit",
    "emit_acquisition_failed",
    "emit_acquisition_finished",
    "emit_acquisition_started",
    "emit_qc_anomaly",
]

log = logging.getLogger(__name__)


def emit(
    name: str,
    resource: Mapping[str, str],
    payload: Mapping[str, Any],
    related: Sequence[Mapping[str, str]] = (),
) -> str | None:
    """Emit one Prefect event; its id, or None when it could not be sent (logged)."""
    try:
        from prefect.events import emit_event

        event = emit_event(
            event=name,
            resource=dict(resource),
            payload=_jsonable(payload),
            related=[dict(r) for r in related] or None,
        )
    except Exception as exc:  # an event is a notice: losing one must not stop an acquisition
        log.warning("could not emit %s for %s: %s", name, resource.get("prefect.resource.id"), exc)
        return None
    if event is None:
        log.info("%s not sent: no Prefect API is configured (PREFECT_API_URL)", name)
        return None
    return str(event.id)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _acquisition(run_id: str, flow: str, edge_url: str | None) -> dict[str, str]:
    resource = {
        "prefect.resource.id": acquisition_resource(run_id),
        "prefect.resource.name": f"{flow} {run_id}",
        "scopeflow.flow": flow,
    }
    if edge_url:
        resource["scopeflow.edge"] = edge_url
    return resource


def emit_acquisition_started(
    run_id: str, flow: str, *, edge_url: str | None = None, detail: Mapping[str, Any] | None = None
) -> str | None:
    return emit(
        ACQUISITION_STARTED,
        _acquisition(run_id, flow, edge_url),
        {"run_id": run_id, "flow": flow, "edge_url": edge_url, **(detail or {})},
    )


def emit_acquisition_finished(
    run_id: str,
    flow: str,
    *,
    stores: Sequence[Path | str],
    run_dir: Path | str | None = None,
    frames: int | None = None,
    edge_url: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> str | None:
    """``stores``: the OME-Zarr images the acquisition wrote (what reactions process)."""
    return emit(
        ACQUISITION_FINISHED,
        _acquisition(run_id, flow, edge_url),
        {
            "run_id": run_id,
            "flow": flow,
            "stores": [str(s) for s in stores],
            "run_dir": str(run_dir) if run_dir is not None else None,
            "frames": frames,
            "edge_url": edge_url,
            **(detail or {}),
        },
    )


def emit_acquisition_failed(
    run_id: str,
    flow: str,
    error: str,
    *,
    edge_url: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> str | None:
    return emit(
        ACQUISITION_FAILED,
        _acquisition(run_id, flow, edge_url),
        {"run_id": run_id, "flow": flow, "error": error, "edge_url": edge_url, **(detail or {})},
    )


def emit_qc_anomaly(
    image: str,
    metric: str,
    value: float | None,
    *,
    threshold: float | None = None,
    verdict: Literal["warn", "fail"] = "fail",
    source: Literal["edge", "folder"] = "folder",
    run_id: str | None = None,
    edge_url: str | None = None,
    edge_token_file: Path | str | None = None,
    frame: int | None = None,
    command_id: str | None = None,
    event: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
) -> str | None:
    """One anomalous image: ``metric`` measured ``value`` (beyond ``threshold``).

    ``source="edge"`` with ``edge_url``, ``frame`` and ``event`` (the frame header's useq event)
    lets the re-queue deployment take the tile again on that edge; a folder image (SEM/TEM) only
    notifies. QC verdicts map straight onto these fields.
    """
    resource = {
        "prefect.resource.id": image_resource(image),
        "prefect.resource.name": image,
        "scopeflow.source": source,
        "scopeflow.metric": metric,
        "scopeflow.verdict": verdict,
    }
    related = [
        {"prefect.resource.id": acquisition_resource(run_id), "prefect.resource.role": "run"}
    ]
    return emit(
        QC_ANOMALY,
        resource,
        {
            "image": image,
            "metric": metric,
            "value": None if value is None else float(value),  # None: unreadable, no value
            "threshold": threshold,
            "verdict": verdict,
            "source": source,
            "run_id": run_id,
            "edge_url": edge_url,
            "edge_token_file": str(edge_token_file) if edge_token_file else None,
            "frame": frame,
            "command_id": command_id,
            "event": dict(event) if event is not None else None,
            **(detail or {}),
        },
        related if run_id else (),
    )
