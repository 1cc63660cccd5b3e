"""Stimulate on an event: the event-triggered flow, with the external devices acting on it.

Every position is watched gently; when an event begins (a cell rounding up before dividing),
the pure `StimulateOnEventPolicy` (``tasks.decisions``) fires a stimulation pattern on that
cell (a useq ``CustomAction`` the edge checks against its envelope: device allow-list, spots
inside the field, intensity, duration and dose, the dose counted in the budget), then images it
fast; after enough events it runs the pump once (e.g. a drug). The live loop, the stores and
the summary are the event-triggered flow's (``flows.event_triggered``); this flow adds the
device check before anything moves and what the devices did to the summary.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from scopeflow import ConfigurationError, EnvelopeViolation, Stimulate, StimulationSpot
from tasks.decisions import EventTriggeredPolicy, StimulateOnEventPolicy
from tasks.hardware import SafetyEnvelope
from tasks.live import DecisionLog

from ._microscope_run import microscope_run
from ._run_id import default_run_id
from ._stimulate_params import StimulateOnEventParams
from .event_triggered import (
    prepare_event_triggered,
    store_events,
    summarise_event_triggered,
    watch,
)

__all__ = ["stimulate_on_event"]


@task(name="check-device-actions", cache_policy=NO_CACHE)
def check_device_actions(params: StimulateOnEventParams) -> None:
    """Refuse the run before anything moves when the edge's envelope would refuse its pattern
    (at a position's centre) or its pump run."""
    plan = params.plan()
    with params.connect() as edge:
        envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
        state = edge.state()
    field = (state.image_width * state.pixel_size_um, state.image_height * state.pixel_size_um)
    try:
        if "custom" not in envelope.allowed_actions:
            raise EnvelopeViolation(
                "the envelope's allowed_actions has no 'custom' (device actions)",
                limit="allowed_actions",
                value="custom",
            )
        for p in params.positions:
            spot = StimulationSpot(x_um=p.x_um, y_um=p.y_um, radius_um=plan.spot_radius_um)
            pattern = Stimulate(
                device=plan.device,
                spots=(spot,),
                intensity=plan.intensity,
                duration_ms=plan.duration_ms,
            )
            envelope.devices.check(pattern, (p.x_um, p.y_um), field, f"position {p.name}")
        if plan.perfusion is not None:
            envelope.devices.check(plan.perfusion, None, None, "the perfusion")
    except EnvelopeViolation as exc:
        raise ConfigurationError(
            f"the edge's envelope refuses this run's device actions: {exc} (limit "
            f"{exc.limit}); change the params file or the envelope (nothing was acquired)"
        ) from exc


def device_summary(decisions_path: Any) -> dict[str, Any]:
    """What the policy sent to the devices, from the decision log."""
    stimulated: list[dict[str, Any]] = []
    perfused: list[dict[str, Any]] = []
    refused = 0
    for record in DecisionLog.read(decisions_path):
        if record.get("type") != "decision":
            continue
        refused += sum(1 for c in record["commands"] if c["refused"] and ".stim-" in c["id"])
        summary = record.get("decision") or {}
        if "stimulated" in summary:
            stimulated.append({k: summary.get(k) for k in ("position", "t", "stimulated")})
        if "perfused" in summary:
            perfused.append({"t": summary.get("t"), "reservoir": summary["perfused"]})
    return {
        "stimulations": len(stimulated),
        "stimulated_spots": sum(len(s["stimulated"]) for s in stimulated),
        "stimulation_log": stimulated,
        "perfusions": perfused,
        "stimulations_refused": refused,
    }


@flow(name="stimulate-on-event", log_prints=True)
def stimulate_on_event(params: StimulateOnEventParams) -> dict[str, Any]:
    """Check devices -> prepare -> watch (stimulating on events) -> store -> summarise."""
    started = time.perf_counter()
    params.compute_profile()  # an unknown profile fails here, before the microscope moves
    positions = [(p.name, p.x_um, p.y_um) for p in params.positions]
    inner = EventTriggeredPolicy(positions, params.rules(), params.event_detectors())
    policy = StimulateOnEventPolicy(inner, params.plan())
    with microscope_run(params, params.run_id or default_run_id("stimulate")) as run:
        check_device_actions(params)
        first, dose_before = prepare_event_triggered(params)
        backend = run.open_backend(params)
        outcome = watch(params, run.run_id, run.run_dir, first, dose_before, backend, policy)
        stores = store_events(params, outcome)
    summary = summarise_event_triggered(params, outcome, stores, started)
    devices = device_summary(outcome.decisions_path)
    summary.update({k: v for k, v in devices.items() if k != "stimulation_log"})
    create_markdown_artifact(
        "# Device actions on events\n\n| position | time point | spots (stage µm) |\n"
        "| --- | --- | --- |\n"
        + "".join(
            f"| {s['position']} | {s['t']} | {s['stimulated']} |\n"
            for s in devices["stimulation_log"]
        )
        + f"\nPerfusions: {devices['perfusions'] or 'none'}\n",
        key="stimulation-actions",
        description="Stimulation patterns and pump runs sent on events",
    )
    return summary
