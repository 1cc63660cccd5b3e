"""Flows that react to scopeflow's events (deployment triggers in deployments/prefect.yaml).

- ``process-acquisition``: on ``scopeflow.acquisition.finished``, segment every store the
  acquisition wrote (the batch segmentation flow, as a subflow per store);
- ``respond-to-anomaly``: on ``scopeflow.qc.anomaly`` from an edge's frame, take that tile again
  (``requeue``) or pause the microscope (``pause``) through the edge agent. The command id is
  derived from the anomaly (frame and command), so a trigger that fires twice acts once.
  A re-queue is a controller of its own: while a flow run or a person leases the microscope
  it waits (``lease_wait_s``, logging who holds it and until when), then takes the lease for
  the re-queue itself; it never acts in another holder's name. A pause is not a controller's
  work but a stop for safety: it is sent at once (a lease held by another refuses it: 423).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

# absolute imports: a worker loads this file as a top-level module named after it, where a
# relative import would make a second copy of flows' modules that Dask workers cannot unpickle
from flows import SegmentDatasetParams
from flows._lease_wait import lease_when_free
from flows.segment_dataset import segment_dataset
from scopeflow import Pause
from tasks.hardware import EdgeClient

__all__ = [
    "AnomalyResponseParams",
    "ProcessAcquisitionParams",
    "process_acquisition",
    "respond_to_anomaly",
]


class ProcessAcquisitionParams(BaseModel):
    """What ``scopeflow.acquisition.finished`` says: the run and the stores it wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1)
    stores: list[Path] = Field(description="OME-Zarr images of the acquisition")
    model: str = Field("classical", description="segmentation model")
    profile: str = Field("local", description="compute profile of the segmentation")
    tile: int = Field(512, ge=16)


@flow(name="process-acquisition", log_prints=True)
def process_acquisition(params: ProcessAcquisitionParams) -> dict[str, Any]:
    """Segment every store of a finished acquisition (labels written next to the image)."""
    logger = get_run_logger()
    missing = [str(s) for s in params.stores if not Path(s).exists()]
    if missing:
        raise FileNotFoundError(
            f"run {params.run_id}: stores {missing} do not exist on this worker; run the "
            "deployment's worker where the acquisition's output folder is mounted"
        )
    results = []
    for store in params.stores:
        summary = segment_dataset(
            SegmentDatasetParams(
                image=store, model=params.model, profile=params.profile, tile=params.tile
            )
        )
        results.append(
            {
                "store": str(store),
                "labels": summary.get("labels"),
                "objects": summary.get("objects"),
            }
        )
    logger.info("run %s: segmented %d store(s)", params.run_id, len(results))
    return {"run_id": params.run_id, "segmented": results}


class AnomalyResponseParams(BaseModel):
    """What ``scopeflow.qc.anomaly`` from an edge's frame says, and what to do about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["requeue", "pause"] = "requeue"
    edge_url: str = Field(min_length=1)
    edge_token_file: Path
    frame: int = Field(ge=0, description="The anomalous frame's index on the edge")
    command_id: str | None = Field(None, description="The command that produced the frame")
    event: dict[str, Any] | None = Field(None, description="The frame's useq event (requeue)")
    metric: str | None = None
    value: float | None = None
    lease_wait_s: float = Field(
        1800.0,
        ge=0,
        description="How long a re-queue waits for a microscope another holder leases",
    )
    lease_ttl_s: float = Field(60.0, gt=0, le=3600, description="The re-queue's own lease")


def response_command_id(params: AnomalyResponseParams) -> str:
    """Deterministic: the same anomaly always gets the same command id (acts once)."""
    origin = (params.command_id or "none")[:80]
    return f"{params.action}-{origin}-f{params.frame}"


@flow(name="respond-to-anomaly", log_prints=True)
def respond_to_anomaly(params: AnomalyResponseParams) -> dict[str, Any]:
    """Re-queue the anomalous tile on its edge (or pause the microscope)."""
    logger = get_run_logger()
    command_id = response_command_id(params)
    with EdgeClient(params.edge_url, token_file=params.edge_token_file) as edge:
        if params.action == "pause":
            ack = edge.command(Pause(), command_id=command_id)
            logger.info("paused %s (%s): %s", params.edge_url, command_id, ack.detail)
            return {"action": "pause", "command_id": command_id, "repeat": ack.repeat}
        if not params.event:
            raise ValueError(
                f"frame {params.frame}: the anomaly carries no useq event to take again; emit "
                "it with event=<the frame header's event> or use action 'pause'"
            )
        why = f"re-queue of frame {params.frame} ({command_id})"
        with lease_when_free(
            edge, command_id, ttl_s=params.lease_ttl_s, wait_s=params.lease_wait_s,
            logger=logger, why=why,
        ) as (_, waited):  # fmt: skip
            ack = edge.submit_events([params.event], command_id=command_id, tag="requeue")
            state = edge.wait_until_idle(timeout=120)
            status = edge.command_status(command_id)
    logger.info(
        "re-queued frame %d (%s = %s) as %s: %s",
        params.frame, params.metric, params.value, command_id,
        "already done" if ack.repeat else "taken again",
    )  # fmt: skip
    return {
        "action": "requeue",
        "command_id": command_id,
        "repeat": ack.repeat,
        "frames": status.done.frames if status.done else None,
        "frames_journaled": state.frames_journaled,
        "lease_waited_s": round(waited.waited_s, 1),
        "lease_waited_for": waited.holders,
    }
