"""Targeted imaging's detail phase with software autofocus: at each target, in path order, one
autofocus call (its own loop phase ``detail-focus-<target>``, scored on the run's focus
workers), then that target's z-stack centred on the focus found (command
``<run>.detail.stack-<target>``). The edge runs its queue in order, so each stack is taken
right after its target's focus, before the next target's sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import useq
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.decisions import Detection
from tasks.live import command_id
from tasks.qc import QCWorkers

from ._focus_step import clamp_centre, focus_here
from ._targeted_params import TargetedImagingParams

__all__ = ["focus_and_acquire_details"]


@task(name="focus-and-acquire-details", cache_policy=NO_CACHE)
def focus_and_acquire_details(
    params: TargetedImagingParams,
    targets: list[Detection],
    run_id: str,
    run_dir: Path,
    z_limits_um: tuple[float, float],
    workers: QCWorkers | None,
) -> tuple[list[str], float, list[dict[str, Any]]]:
    """Focus on each target, then its z-stack there; returns the stacks' command ids, the
    detail pixel size and one focus record per target (``stack_centre_z_um`` added). Each
    search is centred on the focus found at the target before (first: ``focus_z_um``); a
    target where none is found is imaged at that centre, and its record says why. A retried
    task sends the same ids and replays the focus calls' decision logs: nothing moves twice."""
    af = params.autofocus
    assert af is not None  # the flow calls this task only with autofocus set
    det = params.detail
    offsets = det.z_offsets()
    half = max(abs(o) for o in offsets)
    ids: list[str] = []
    records: list[dict[str, Any]] = []
    z = params.focus_z_um
    with params.connect() as edge:
        edge.wait_until_idle()
        edge.set_objective(det.objective, command_id=command_id(run_id, "detail", "objective"))
        pixel_size = edge.state().pixel_size_um
        for p, t in enumerate(targets):
            record = focus_here(
                edge, workers, af, x_um=t.x_um, y_um=t.y_um, z_um=z, run_id=run_id,
                phase=f"detail-focus-{p:04d}", log_dir=run_dir / "focus",
            )  # fmt: skip
            z = record["z_um"] if record["found"] else z
            centre = clamp_centre(z, half, z_limits_um)
            events = [
                useq.MDAEvent(
                    x_pos=t.x_um,
                    y_pos=t.y_um,
                    z_pos=centre + dz,
                    channel=det.channel,
                    exposure=det.exposure_ms,
                    index={"p": p, "z": k},
                )
                for k, dz in enumerate(offsets)
            ]
            stack_id = command_id(run_id, "detail", f"stack-{p:04d}")
            edge.submit_events(events, command_id=stack_id)
            ids.append(stack_id)
            records.append({"target": p, **record, "stack_centre_z_um": round(centre, 4)})
    return ids, pixel_size, records
