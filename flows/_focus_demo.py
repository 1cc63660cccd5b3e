"""The autofocus demo: a 2 h time-lapse of a drifting sample on a simulated microscope.

Starts a simulated edge agent with thermal focus drift (512x512 camera at 20x, the sample's
clock at ``FOCUS_TIME_SCALE`` simulated seconds per real second, so 2 h of the sample pass in
two minutes; each second the loop waits on a busy machine lets the focus drift a minute's
worth, which a real microscope at 1x never sees), runs the ``autofocus`` flow (a focus sweep
scored on a local Ray/Dask worker or threads before every time point, then the image at the
focus found) and scores it on the simulator's ground truth: the fraction of time points whose
focus is within the objective's depth of field and the focus error, against the static
protocol (focus found once, at the start, and kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ._demo_scope import print_summary, simulated_scope
from ._focus import AutofocusSettings, FocusOptics
from ._focus_params import FocusTimelapseParams
from ._tracking_demo import CAMERA, OBJECTIVE
from ._tracking_params import TrackedPosition

__all__ = ["DEMO_SAMPLE_HOURS", "FOCUS_TIME_SCALE", "focus_demo_params", "run_focus_demo"]

FOCUS_TIME_SCALE = 60.0  # one real second is a simulated minute: 2 h pass in 2 minutes
DEMO_SAMPLE_HOURS = 2.0
SAMPLE_INTERVAL_S = 120.0  # a time point every two simulated minutes: 61 over 2 h


def focus_demo_params(
    edge_url: str,
    token_file: Path,
    output_dir: Path,
    *,
    workers: Literal["ray", "dask", "threads"] = "ray",
    every: int = 1,
    method: Literal["track", "search"] = "track",
    hours: float = DEMO_SAMPLE_HOURS,
    positions: int = 1,
) -> FocusTimelapseParams:
    """The demo's time-lapse: ``positions`` fields 1 mm apart near the slide's centre."""
    optics = FocusOptics.simulated(20.0 if OBJECTIVE == "20x" else float(OBJECTIVE[:-1]))
    return FocusTimelapseParams(
        positions=[
            TrackedPosition(name=f"field-{k}", x_um=4_500.0 + 1_000.0 * k, y_um=5_000.0)
            for k in range(positions)
        ],
        objective=OBJECTIVE,
        duration_s=hours * 3600.0 / FOCUS_TIME_SCALE,
        interval_s=SAMPLE_INTERVAL_S / FOCUS_TIME_SCALE,
        autofocus=AutofocusSettings(method=method, every=every, optics=optics, workers=workers),
        edge_url=edge_url,
        edge_token_file=token_file,
        output_dir=output_dir,
    )


def run_focus_demo(
    data_dir: Path,
    *,
    seed: int = 0,
    backend: Literal["ray", "dask", "threads"] = "ray",
    every: int = 1,
    method: Literal["track", "search"] = "track",
    hours: float = DEMO_SAMPLE_HOURS,
    positions: int = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the autofocus time-lapse on a drifting simulated sample; its summary with scores."""
    from .focus_timelapse import autofocus_timelapse

    edge_args = [
        "--camera-size", str(CAMERA), "--time-scale", str(FOCUS_TIME_SCALE),
        "--seed", str(seed), "--focus-drift",
    ]  # fmt: skip
    with simulated_scope(data_dir, f"autofocus-demo-s{seed}", edge_args, quiet=quiet) as scope:
        params = focus_demo_params(
            scope.edge.url, scope.edge.token_file, scope.run_dir, workers=backend, every=every,
            method=method, hours=hours, positions=positions,
        )  # fmt: skip
        with scope.console.status(
            f"a {hours:g} h drifting time-lapse ({params.time_points} points)..."
        ):
            summary = autofocus_timelapse(params)
    summary["seed"] = seed
    summary["wall_s"] = scope.wall_s()
    print_summary(
        scope.console,
        "scopeflow demo: autofocus",
        summary,
        skip=("stores", "autofocus_not_found"),
    )
    return summary
