"""The stimulation demo: stimulate cells as they round up to divide, then add a drug, on a
simulated microscope with a syringe pump and a DMD, and score the run on its ground truth.

Starts a simulated edge agent whose envelope allows the pump (medium and drug, volume and flow
limits) and the DMD (intensity, duration and dose limits), picks cells that will divide during
the run (as the event-triggered demo does), runs the ``stimulate_on_event`` flow (the drug goes
in at 92 % of the run), shows one refusal (a pump run over the volume limit: 422, nothing
pumped), and scores: were the cells the
DMD lit on the event when it lit them (rounded up, or a daughter of a division within the last
two gentle time points), how far their reporter rose, and how many divisions the drug
prevented (the simulator's sample is deterministic on its biological clock, so a copy here
counts the divisions with and without the drug).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scopeflow import EdgeRejected, PumpRun, pump_event
from tasks.hardware.sim import SimulatorConfig, VirtualSample

from ._demo import start_demo_edge
from ._event_demo import TIME_SCALE, pick_dividing_cells_late
from ._stimulate_params import PerfusionSettings, StimulateOnEventParams
from ._tracking_demo import CAMERA, OBJECTIVE, REGION

__all__ = ["STIMULATION_ENVELOPE", "run_stimulation_demo", "score_stimulation"]

DMD_POWER_MW = 50.0
STIMULATION_ENVELOPE = f"""\
allowed_actions: [acquire_image, hardware_autofocus, custom]
devices:
  pumps:
    Pump: {{allowed_reservoirs: [medium, drug], max_volume_ul: 500, max_flow_ul_per_min: 1000}}
  stimulators:
    DMD: {{power_mw: {DMD_POWER_MW}, max_intensity_percent: 80, max_duration_ms: 2000,
          max_dose_mj: 1.0}}
"""
DRUG_HORIZON_S = 3_000.0  # simulated seconds after the drug over which divisions are counted
EVENT_WINDOW_S = 2 * 4.0 * TIME_SCALE  # a lit daughter of a division this recent: on the event
PERFUSE_AT = 0.92  # the drug goes in after the picked cells divided (50-90 % of the run)
REPORTER_AFTER_S = 300.0  # the reporter is read this long (simulated) after its pattern


def score_stimulation(truth: dict[str, Any], config: SimulatorConfig, edge: Any) -> dict[str, Any]:
    """The devices' effect on the sample, from the edge's ground truth (``truth``: /v1/truth
    now) and a local copy of the sample."""
    devices = truth["devices"]
    patterns = devices["stimulation"]["patterns"]
    local = VirtualSample(config)
    on_event = lit = 0
    activation: list[float] = []
    for pattern in patterns:
        x, y, t = *pattern["stage"], pattern["t_s"]
        cells = edge.truth((x - 100, y - 100, x + 100, y + 100), t_s=t)["cells"]
        rounding = {c["ids"] for c in cells if c["phase"] == 1}
        parents = {c["ids"]: c["parent_ids"] for c in cells}
        divided = {d.parent_id for d in local.divisions(t - EVENT_WINDOW_S, t)}
        lit += len(pattern["cells"])
        on_event += sum(i in rounding or parents.get(i) in divided for i in pattern["cells"])
        after = edge.truth((0.0, 0.0, 1.0, 1.0), t_s=t + REPORTER_AFTER_S)["devices"]
        level = {c["id"]: c["activation"] for c in after["stimulation"]["stimulated_cells"]}
        activation += [level.get(i, 0.0) for i in pattern["cells"]]
    infusions = devices["perfusion"]["infusions"]
    score: dict[str, Any] = {
        "stimulations_fired": len(patterns),
        "stimulated_cells": lit,
        "stimulated_on_event": on_event,
        "stimulated_on_event_fraction": round(on_event / lit, 3) if lit else None,
        "reporter_activation_after": round(sum(activation) / len(activation), 3)
        if activation
        else None,
        "reporter_after_s": REPORTER_AFTER_S,
        "stimulation_dose_mj": round(
            sum(
                DMD_POWER_MW * p["on_fraction"] * p["intensity"] / 100 * p["duration_ms"] / 1e3
                for p in patterns
            ),
            6,
        ),
        "infusions": [
            {k: i[k] for k in ("reservoir", "volume_ul", "t_start_s", "t_end_s", "biology_rate")}
            for i in infusions
        ],
    }
    if infusions:
        t_end = infusions[-1]["t_end_s"]
        later = edge.truth((0.0, 0.0, 1.0, 1.0), t_s=t_end + DRUG_HORIZON_S)
        tau = later["devices"]["perfusion"]["biological_time_s"]
        score["divisions_after_drug"] = len(local.divisions(t_end, tau, REGION))
        score["divisions_without_drug"] = len(
            local.divisions(t_end, t_end + DRUG_HORIZON_S, REGION)
        )
        score["drug_horizon_s"] = DRUG_HORIZON_S
    return score


def run_stimulation_demo(
    data_dir: Path,
    *,
    duration_s: float = 60.0,
    positions: int = 2,
    model: str = "classical",
    backend: str = "ray",
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the stimulate-on-event flow on the simulator end to end; its summary with scores."""
    from tasks.hardware import EdgeClient

    from .stimulate_on_event import stimulate_on_event

    console = Console(stderr=True, quiet=quiet)
    started = time.perf_counter()
    run_dir = data_dir / datetime.now(UTC).strftime(f"stimulation-demo-s{seed}-%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True, exist_ok=True)
    envelope = run_dir / "envelope.yaml"
    envelope.write_text(STIMULATION_ENVELOPE)
    config = SimulatorConfig(seed=seed, width=CAMERA, height=CAMERA, time_scale=TIME_SCALE)
    edge_args = [
        "--camera-size", str(CAMERA), "--time-scale", str(TIME_SCALE), "--seed", str(seed),
        "--envelope", str(envelope),
    ]  # fmt: skip
    edge = start_demo_edge(console, run_dir / "edge", edge_args)
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            t_now = float(client.truth((0.0, 0.0, 1.0, 1.0))["t_s"])
            refused = _refusal(client)
        chosen = pick_dividing_cells_late(config, t_now, duration_s * TIME_SCALE, positions)
        params = StimulateOnEventParams(
            positions=chosen,
            objective=OBJECTIVE,
            duration_s=duration_s,
            model=model,
            model_options={} if model != "classical" else {"working_radius_px": 4.0},
            backend={"kind": backend, "workers": 1},
            perfusion=PerfusionSettings(reservoir="drug", at_s=PERFUSE_AT * duration_s),
            edge_url=edge.url,
            edge_token_file=edge.token_file,
            output_dir=run_dir,
        )
        with console.status(f"watching {positions} cells for {duration_s:g} s..."):
            summary = stimulate_on_event(params)
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            summary.update(score_stimulation(client.truth((0.0, 0.0, 1.0, 1.0)), config, client))
    finally:
        edge.stop()
    summary["refused_example"] = refused
    summary["seed"] = seed
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    _print(console, summary)
    return summary


def _refusal(client: Any) -> dict[str, Any]:
    """A pump run over the envelope's volume limit: refused whole, nothing pumped."""
    too_much = pump_event(PumpRun(reservoir="drug", volume_ul=5_000, flow_ul_per_min=600))
    try:
        client.submit_events([too_much], command_id="demo-refused-pump")
    except EdgeRejected as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        infusions = client.truth((0.0, 0.0, 1.0, 1.0))["devices"]["perfusion"]["infusions"]
        return {"status": exc.status_code, "limit": detail.get("limit"), "pumped": len(infusions)}
    raise RuntimeError("the envelope accepted a pump run over its volume limit")


def _print(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="scopeflow demo: stimulation on events")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key not in ("stores",):
            table.add_row(key, str(value))
    console.print(table)
