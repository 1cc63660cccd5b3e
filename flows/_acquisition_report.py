"""What every acquisition flow does around its body: Prefect events (started / finished /
failed) and, once its stores are written, their OMERO registration queued in the spool.

A decorator under ``@flow``, so a flow gains it with one line and its body stays as it is.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from tasks.events import (
    emit_acquisition_failed,
    emit_acquisition_finished,
    emit_acquisition_started,
)

__all__ = ["queue_for_omero", "reports_acquisition"]

log = logging.getLogger(__name__)

Summary = dict[str, Any]


def reports_acquisition(
    flow_name: str, *, stores: Callable[[Summary], list[str]]
) -> Callable[[Callable[..., Summary]], Callable[..., Summary]]:
    """Wrap an acquisition flow ``f(params) -> summary``: ``stores(summary)`` names what it
    wrote. The events' resource is the Prefect flow run; the summary gains ``omero`` (the
    spool keys) and ``prefect_events`` (the ids sent)."""

    def wrap(body: Callable[..., Summary]) -> Callable[..., Summary]:
        @functools.wraps(body)
        def run(params: BaseModel) -> Summary:
            run_id = _flow_run_id()
            edge_url = getattr(params, "edge_url", None)
            sent = [emit_acquisition_started(run_id, flow_name, edge_url=edge_url)]
            try:
                summary = body(params)
            except BaseException as exc:
                emit_acquisition_failed(
                    run_id, flow_name, f"{type(exc).__name__}: {exc}", edge_url=edge_url
                )
                raise
            written = stores(summary)
            provenance = {
                "flow": flow_name,
                "run_id": summary.get("run_id", run_id),
                "prefect_flow_run_id": run_id,
                "edge_url": edge_url,
                "params": params.model_dump(mode="json"),
                "analysis": summary.get("analysis"),
            }
            scopeflow_run = summary.get("run_id", run_id)
            summary["omero"] = queue_for_omero(
                written, scopeflow_run, flow_name, provenance, summary.get("qc")
            )
            sent.append(
                emit_acquisition_finished(
                    run_id,
                    flow_name,
                    stores=written,
                    run_dir=_run_dir(summary),
                    frames=summary.get("frames_acquired"),
                    edge_url=edge_url,
                    detail={"scopeflow_run_id": scopeflow_run, "omero": summary["omero"]},
                )
            )
            summary["prefect_events"] = [e for e in sent if e]
            return summary

        # resolved here: Prefect reads the parameter types from the wrapper, whose module does
        # not import the flow's parameter model
        run.__annotations__ = typing.get_type_hints(body)
        run.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
        return run

    return wrap


def queue_for_omero(
    stores: list[str], run_id: str, flow_name: str, provenance: dict[str, Any], qc: Any
) -> list[str]:
    """Spool keys; [] when OMERO is not configured or the spool cannot be written (logged:
    the acquisition's data are safe on disk either way, `scopeflow omero register` catches up)."""
    from tasks.storage.omero import queue_acquisition

    try:
        return queue_acquisition(
            stores, run_id=run_id, project=flow_name, provenance=provenance, qc=qc
        )
    except Exception as exc:
        log.error("run %s: could not queue %d store(s) for OMERO: %s", run_id, len(stores), exc)
        return []


def _run_dir(summary: Summary) -> str | None:
    stores = summary.get("stores")
    if isinstance(stores, dict) and stores.get("run_dir"):
        return str(stores["run_dir"])
    return summary.get("run_dir")


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")
