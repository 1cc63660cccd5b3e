"""The uncertainty-triggered demo: predict nuclei from brightfield, acquire DAPI only when unsure,
and score it against the static protocol (DAPI at every time point) on the ground truth.

Each protocol runs on its own simulated edge agent showing the same sample (same seed and
clock), with the model on a local Ray or Dask worker. Both runs are scored the same way
(``score_uncertainty_on_simulation``: nuclei instance F1 against the simulator's truth), so the
comparison is acquisitions and dose at the accuracy each protocol reached.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tasks.hardware import EdgeClient
from tasks.hardware.sim import SimulatorConfig

from ._demo import simulated_edge, warm_prefect
from ._tracking_params import TrackedPosition
from ._uncertainty_params import UncertaintyParams
from ._uncertainty_truth import score_uncertainty_on_simulation

__all__ = ["UNCERTAINTY_ACCURACY_TOLERANCE", "demo_positions", "run_uncertainty_demo"]

CAMERA = 512
OBJECTIVE = "20x"
TIME_SCALE = 60.0  # one real second is a simulated minute
CENTRE = (5_000.0, 5_000.0)
SPACING_UM = 450.0  # positions far enough apart that their fields never overlap
# "equal accuracy": the smart protocol's nuclei F1 at most this far below the static one's.
# One percentage point is under the F1 difference a facility would notice in a count (one
# nucleus in a hundred) and about the static protocol's own spread between seeds.
UNCERTAINTY_ACCURACY_TOLERANCE = 0.01


def demo_positions(count: int, seed: int) -> list[TrackedPosition]:
    """``count`` positions on a grid around the slide's centre, shifted by ``seed``."""
    import numpy as np

    rng = np.random.default_rng([seed, 881])
    side = int(np.ceil(np.sqrt(count)))
    out = []
    for k in range(count):
        r, c = divmod(k, side)
        jitter = rng.uniform(-60.0, 60.0, 2)
        x = CENTRE[0] + (c - (side - 1) / 2) * SPACING_UM + jitter[0]
        y = CENTRE[1] + (r - (side - 1) / 2) * SPACING_UM + jitter[1]
        out.append(TrackedPosition(name=f"pos-{k:02d}", x_um=float(x), y_um=float(y)))
    return out


def run_uncertainty_demo(
    data_dir: Path,
    *,
    positions: int = 6,
    time_points: int = 6,
    backend: str = "ray",
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Both protocols on the simulator end to end; the comparison (see the module)."""
    from .uncertainty_triggered import uncertainty_triggered

    console = Console(stderr=True, quiet=quiet)
    started = time.perf_counter()
    run_dir = data_dir / datetime.now(UTC).strftime(f"uncertainty-demo-s{seed}-%Y%m%dT%H%M%SZ")
    config = SimulatorConfig(seed=seed, width=CAMERA, height=CAMERA, time_scale=TIME_SCALE)
    chosen = demo_positions(positions, seed)
    with console.status("starting Prefect..."):
        warm_prefect()
    runs: dict[str, dict[str, Any]] = {}
    for protocol in ("uncertainty", "always"):
        with simulated_edge(run_dir / protocol / "edge", config) as edge:
            params = UncertaintyParams(
                positions=chosen,
                objective=OBJECTIVE,
                time_points=time_points,
                protocol=protocol,  # type: ignore[arg-type]
                backend={"kind": backend, "workers": 1},
                edge_url=edge.url,
                edge_token_file=edge.token_file,
                output_dir=run_dir / protocol,
            )
            with console.status(f"{protocol} protocol: {positions} positions x {time_points}..."):
                summary = uncertainty_triggered(params)
            with EdgeClient(edge.url, token_file=edge.token_file) as client:
                summary.update(
                    score_uncertainty_on_simulation(
                        Path(summary["run_dir"]) / "decisions.jsonl",
                        config,
                        client,
                        objective=OBJECTIVE,
                    )
                )
        runs[protocol] = summary
    smart, static = runs["uncertainty"], runs["always"]
    delta = smart["accuracy"] - static["accuracy"]
    result: dict[str, Any] = {
        "seed": seed,
        "positions": positions,
        "time_points": time_points,
        "threshold": smart["threshold"],
        "expensive_acquisitions": smart["expensive_acquisitions"],
        "expensive_acquisitions_static": static["expensive_acquisitions"],
        "reduction": round(
            1.0 - smart["expensive_acquisitions"] / max(static["expensive_acquisitions"], 1), 4
        ),
        "accuracy": smart["accuracy"],
        "accuracy_static": static["accuracy"],
        "accuracy_delta": round(delta, 4),
        "accuracy_tolerance": UNCERTAINTY_ACCURACY_TOLERANCE,
        "accuracy_acquired": smart["accuracy_acquired"],
        "accuracy_predicted": smart["accuracy_predicted"],
        "nuclei_true": smart["nuclei_true"],
        "dose_mj": smart["dose_mj"],
        "dose_static_mj": static["dose_mj"],
        "goal_met": bool(smart["reduction"] >= 0.5 and delta >= -UNCERTAINTY_ACCURACY_TOLERANCE),
        "stores": smart["stores"] + static["stores"],
        "run_dir": str(run_dir),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    _print(console, result)
    return result


def _print(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="scopeflow demo: uncertainty-triggered acquisition")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "stores":
            table.add_row(key, str(value))
    console.print(table)
