"""The acquisition-optimisation demo: find the exposure, intensity and binning that give the
best image for the light spent on a simulated microscope, against a grid search.

Starts a simulated edge agent (512x512 camera, 10x, the sample frozen in time so only the light
changes it) whose envelope lets events set the camera's binning, runs the
``optimise_acquisition`` flow with the frames scored on a local Ray or Dask worker, and reports
beside the image-based score the ground-truth accuracy (segmentation F1 against the simulator's
true nuclei) of both searches' best frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.hardware import EdgeClient
from tasks.hardware.sim import SimulatorConfig

from ._demo_scope import print_summary, simulated_scope
from ._optimise_params import OptimiseAcquisitionParams
from ._optimise_truth import TruthScorer

__all__ = ["CAMERA", "DEMO_ENVELOPE", "optimise_demo_params", "run_optimise_demo"]

CAMERA = 512
# the simulator's default envelope, plus the camera's binning for events
DEMO_ENVELOPE: dict[str, Any] = {
    "x_limits_um": [0.0, 10_000.0],
    "y_limits_um": [0.0, 10_000.0],
    "allowed_properties": {"Illumination": ["Intensity"], "Camera": ["Binning"]},
}


def optimise_demo_params(
    edge_url: str, token_file: Path, output_dir: Path, *, backend: str, seed: int, **extra: Any
) -> OptimiseAcquisitionParams:
    """The demo's search: exposure 0.5-200 ms x intensity 2-100 % x binning 1/2/4, a grid of
    8 x 5 x 3 = 120 points, 30 optimiser trials (25 %)."""
    return OptimiseAcquisitionParams.model_validate(
        {
            "binnings": [1, 2, 4],
            "seed": seed,
            "workers": backend,
            "edge_url": edge_url,
            "edge_token_file": token_file,
            "output_dir": output_dir,
            **extra,
        }
    )


def run_optimise_demo(
    data_dir: Path,
    *,
    backend: str = "ray",
    seed: int = 0,
    quiet: bool = False,
    envelope: dict[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Run the optimisation flow on the simulator end to end; its summary with truth scores.
    ``envelope``: the edge's envelope file's contents (default ``DEMO_ENVELOPE``); ``params``:
    overrides of the flow's parameters."""
    from .optimise_acquisition import optimise_acquisition

    def edge_args(run_dir: Path) -> list[str]:
        envelope_file = run_dir / "envelope.yaml"
        envelope_file.write_text(yaml.safe_dump(envelope or DEMO_ENVELOPE))
        return [
            "--camera-size", str(CAMERA), "--time-scale", "0", "--seed", str(seed),
            "--envelope", str(envelope_file),
        ]  # fmt: skip

    with simulated_scope(data_dir, f"optimise-demo-s{seed}", edge_args, quiet=quiet) as scope:
        edge, console, run_dir = scope.edge, scope.console, scope.run_dir
        params = optimise_demo_params(
            edge.url, edge.token_file, run_dir, backend=backend, seed=seed, **params
        )
        with console.status("grid search, then Bayesian optimisation (real acquisitions)..."):
            summary = optimise_acquisition(params)
        truth = TruthScorer(
            SimulatorConfig(seed=seed, width=CAMERA, height=CAMERA, time_scale=0),
            objective=params.objective,
            channel=params.channel,
        )
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            for key in ("best", "grid_best"):
                trial = summary[f"{key}_trial"]
                summary[f"{key}_truth_f1"] = (
                    truth.f1(trial, client.frame(trial["frame"]).pixels) if trial else None
                )
    summary["seed"] = seed
    summary["wall_s"] = scope.wall_s()
    print_summary(
        console,
        "scopeflow demo: acquisition optimisation",
        summary,
        skip=("stores", "best_trial", "grid_best_trial"),
    )
    return summary
