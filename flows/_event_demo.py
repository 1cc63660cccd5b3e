"""The event-triggered demo: watch dividing cells on a simulated microscope and score the run.

Starts a simulated edge agent (512x512 camera at 20x, the sample's clock at ``TIME_SCALE``
simulated seconds per second), warms Prefect up, picks cells that will divide during the run
(the simulator is deterministic, so a copy of its sample here knows its future), runs the
``event_triggered`` flow on them with the model on a local Ray or Dask worker, and scores the
run against the simulator's ground truth: divisions imaged at the fast rate, and the light dose
against an always-fast protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.hardware import EdgeClient
from tasks.hardware.sim import SimulatorConfig, VirtualSample

from ._demo_scope import print_summary, simulated_scope
from ._event_log import frames_by_position
from ._event_params import EventTriggeredParams
from ._event_plots import render_timeline_png
from ._event_truth import score_events_on_simulation
from ._tracking_demo import CAMERA, OBJECTIVE, REGION
from ._tracking_params import TrackedPosition

__all__ = ["divisions_kept", "pick_dividing_cells_late", "run_event_demo"]

TIME_SCALE = 120.0  # one real second is two simulated minutes: rounding lasts 7.5 s


def pick_dividing_cells_late(
    config: SimulatorConfig, t_now_s: float, duration_s: float, count: int
) -> list[TrackedPosition]:
    """``count`` in-focus cells, far apart, each dividing between 60 % and 95 % of the run
    (the flow and its workers start after the pick, 15-50 s on a busy machine, so early
    divisions would round up unwatched); each position is where its cell will divide."""
    import numpy as np

    sample = VirtualSample(config)
    t0, t1 = t_now_s + 0.6 * duration_s, t_now_s + 0.95 * duration_s
    fov = CAMERA * config.pixel_size_um(OBJECTIVE)
    chosen: list[TrackedPosition] = []
    for division in sorted(sample.divisions(t0, t1, REGION), key=lambda d: d.parent_id):
        cells = sample.cells_at(division.time_s - 1.0, REGION)
        k = np.flatnonzero(cells.ids == division.parent_id)
        if k.size == 0 or abs(cells.z_um[k[0]] - config.focal_plane_z_um) > 1.0:
            continue
        x, y = float(division.x_um), float(division.y_um)
        if all(np.hypot(x - p.x_um, y - p.y_um) > 2 * fov for p in chosen):
            chosen.append(TrackedPosition(name=f"cell-{division.parent_id}", x_um=x, y_um=y))
        if len(chosen) == count:
            return chosen
    raise RuntimeError(
        f"only {len(chosen)} cells divide in the demo region late in the run; use fewer "
        "positions or a longer duration"
    )


def run_event_demo(
    data_dir: Path,
    *,
    duration_s: float = 60.0,
    positions: int = 3,
    model: str = "classical",
    backend: str = "ray",
    seed: int = 0,
    quiet: bool = False,
    photodamage_dose: dict[str, float] | None = None,
    always_fast: bool = False,
) -> dict[str, Any]:
    """Run the event-triggered flow on the simulator end to end; its summary with scores.
    ``photodamage_dose``: the simulated cells stop dividing past this light dose per channel
    (ms at 100 %); ``always_fast``: the static always-fast protocol instead (same positions,
    the ``always`` detector, no time limit), to compare with."""
    from .event_triggered import event_triggered

    config = SimulatorConfig(seed=seed, width=CAMERA, height=CAMERA, time_scale=TIME_SCALE)
    edge_args = [
        "--camera-size", str(CAMERA), "--time-scale", str(TIME_SCALE), "--seed", str(seed),
    ]  # fmt: skip
    protocol: dict[str, Any] = (
        {"detectors": ["always"], "end_on": [], "max_fast_s": 2 * duration_s, "cooldown_s": 0}
        if always_fast
        else {}
    )
    if photodamage_dose:
        data_dir.mkdir(parents=True, exist_ok=True)
        sim_config = data_dir / f"event-demo-s{seed}-photodamage.yaml"
        sim_config.write_text(yaml.safe_dump({"photodamage_dose": dict(photodamage_dose)}))
        edge_args += ["--sim-config", str(sim_config)]
    with simulated_scope(data_dir, f"event-demo-s{seed}", edge_args, quiet=quiet) as scope:
        chosen = pick_dividing_cells_late(
            config, scope.sample_time_s(), duration_s * TIME_SCALE, positions
        )
        params = EventTriggeredParams(
            positions=chosen,
            objective=OBJECTIVE,
            duration_s=duration_s,
            model=model,
            model_options={} if model != "classical" else {"working_radius_px": 4.0},
            backend={"kind": backend, "workers": 1},
            output_dir=scope.run_dir,
            **scope.connection(),
            **protocol,
        )
        with scope.console.status(f"watching {positions} cells for {duration_s:g} s..."):
            summary = event_triggered(params)
        decisions = Path(summary["run_dir"]) / "decisions.jsonl"
        truth = score_events_on_simulation(
            decisions,
            config,
            [(p.name, p.x_um, p.y_um) for p in chosen],
            roi_um=params.roi_um,
            max_spacing_s=1.5 * params.fast.interval_s * TIME_SCALE,
            rounding_s=config.rounding_min * 60.0,
        )
        with EdgeClient(**_client_args(scope.connection())) as client:
            truth["divisions_kept"] = divisions_kept(client, truth["events"])
    per_position = frames_by_position(decisions)
    marks: dict[str, list[float]] = {}
    for event in truth["events"]:
        marks.setdefault(event["position"], []).append(event["time_s"])
    png = render_timeline_png(
        {p.name: per_position.get(i, []) for i, p in enumerate(chosen)}, marks
    )
    (Path(summary["run_dir"]) / "timeline-truth.png").write_bytes(png)
    summary.update(truth)
    summary["seed"] = seed
    summary["protocol"] = "always-fast" if always_fast else "event-triggered"
    summary["photodamage_dose"] = photodamage_dose
    summary["wall_s"] = scope.wall_s()
    print_summary(
        scope.console, "scopeflow demo: event-triggered", summary, skip={"stores", "events"}
    )
    return summary


def divisions_kept(client: EdgeClient, events: list[dict[str, Any]]) -> int:
    """Of the true events (divisions due in the watched regions when no light harms the
    cells), how many happened on the edge's simulated sample: a parent still alive after its
    division time was stopped by photodamage. Marks each event's ``divided``."""
    kept = 0
    for event in events:
        x, y = event["x_um"], event["y_um"]
        region = (x - 30.0, y - 30.0, x + 30.0, y + 30.0)
        cells = client.truth(region, event["time_s"] + 1.0)["cells"]
        divided = not any(c["ids"] == event["cell"] for c in cells)
        event["divided"] = divided
        kept += divided
    return kept


def _client_args(connection: dict[str, Any]) -> dict[str, Any]:
    return {"url": connection["edge_url"], "token_file": connection["edge_token_file"]}
