"""The tracking demo: follow dividing cells on a simulated microscope and score the tracks.

Starts a simulated edge agent (512x512 camera at 20x, the sample's clock at ``TIME_SCALE``
simulated seconds per second), warms Prefect up, then picks cells that will divide during the
run (the simulator is deterministic, so a copy of its sample here knows its future), runs the
``tracking`` flow on them with the model on a local Ray or Dask worker, and scores the tracks
against the simulator's ground truth (CTC TRA with py-ctcmetrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.hardware.sim import SimulatorConfig, VirtualSample

from ._demo_scope import print_summary, simulated_scope
from ._tracking_params import TrackedPosition, TrackingParams
from ._tracking_truth import score_tracking_on_simulation

__all__ = ["pick_dividing_cells", "run_tracking_demo"]

TIME_SCALE = 60.0  # one real second is a simulated minute: cells move ~0.3 µm per time point
CAMERA = 512
OBJECTIVE = "20x"
REGION = (3_000.0, 3_000.0, 7_000.0, 7_000.0)


def pick_dividing_cells(
    config: SimulatorConfig, t_now_s: float, duration_s: float, count: int
) -> list[TrackedPosition]:
    """``count`` in-focus cells, far apart, each dividing between 20 % and 70 % of the run."""
    sample = VirtualSample(config)
    t0, t1 = t_now_s + 0.2 * duration_s, t_now_s + 0.7 * duration_s
    cells = sample.cells_at(t_now_s, REGION)
    fov = CAMERA * config.pixel_size_um(OBJECTIVE)
    chosen: list[TrackedPosition] = []
    for division in sorted(sample.divisions(t0, t1, REGION), key=lambda d: d.parent_id):
        k = np.flatnonzero(cells.ids == division.parent_id)
        if k.size == 0 or abs(cells.z_um[k[0]] - config.focal_plane_z_um) > 1.0:
            continue
        x, y = float(cells.x_um[k[0]]), float(cells.y_um[k[0]])
        if all(np.hypot(x - p.x_um, y - p.y_um) > 2 * fov for p in chosen):
            chosen.append(TrackedPosition(name=f"cell-{division.parent_id}", x_um=x, y_um=y))
        if len(chosen) == count:
            return chosen
    raise RuntimeError(
        f"only {len(chosen)} cells divide in the demo region during the run; use fewer "
        "positions or more time points"
    )


def run_tracking_demo(
    data_dir: Path,
    *,
    time_points: int = 100,
    positions: int = 2,
    interval_s: float = 1.0,
    model: str = "unet",
    backend: str = "ray",
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the tracking flow on the simulator end to end; return its summary with scores."""
    from .tracking import tracking

    config = SimulatorConfig(seed=seed, width=CAMERA, height=CAMERA, time_scale=TIME_SCALE)
    edge_args = [
        "--camera-size", str(CAMERA), "--time-scale", str(TIME_SCALE), "--seed", str(seed),
    ]  # fmt: skip
    with simulated_scope(data_dir, "tracking-demo", edge_args, quiet=quiet) as scope:
        chosen = pick_dividing_cells(
            config, scope.sample_time_s(), time_points * interval_s * TIME_SCALE, positions
        )
        params = TrackingParams(
            positions=chosen,
            objective=OBJECTIVE,
            time_points=time_points,
            interval_s=interval_s,
            model=model,
            model_options={} if model != "classical" else {"working_radius_px": 4.0},
            backend={"kind": backend, "workers": 1},
            # a decision is due before the next time point: the workers get most of the interval
            # (both positions' frames queue on one worker), the local model the rest
            deadline_ms=0.8 * interval_s * 1e3,
            link_distance_um=6.0,
            output_dir=scope.run_dir,
            **scope.connection(),
        )
        with scope.console.status(f"tracking {positions} cells over {time_points} time points..."):
            summary = tracking(params)
        with scope.console.status("scoring the tracks against the simulator's ground truth..."):
            truth = score_tracking_on_simulation(
                Path(summary["run_dir"]), config, objective=OBJECTIVE, channel=params.channel
            )
    summary.update(truth)
    summary["wall_s"] = scope.wall_s()
    print_summary(scope.console, "scopeflow demo: tracking", summary)
    return summary
