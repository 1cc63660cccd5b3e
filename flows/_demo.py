"""The embedded demo: targeted imaging on a simulated microscope, with nothing to set up.

Starts the simulated edge agent as a child process on 127.0.0.1, runs the targeted-imaging flow
on Prefect's local mode (or against PREFECT_API_URL when set) with a local Ray cluster, writes
OME-Zarr under ``<data_dir>/<run>/`` and stops everything it started, also on Ctrl-C or error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from tasks.decisions import SelectionRules

from ._targeted_params import Region, TargetedImagingParams

if TYPE_CHECKING:
    from tasks.hardware import EdgeProcess
    from tasks.hardware.sim import SimulatorConfig

__all__ = [
    "DEMO_DENSITY",
    "DEMO_REGION",
    "demo_params",
    "run_demo",
    "simulated_edge",
    "warm_prefect",
]

DEMO_DENSITY = 20.0  # nuclei per mm²: sparse, where targeted imaging beats tiling
DEMO_REGION = (4_200.0, 4_200.0, 5_800.0, 5_800.0)
DEMO_CAMERA = 1024


def demo_params(
    edge_url: str, token_file: Path, output_dir: Path, backend: str
) -> TargetedImagingParams:
    x0, y0, x1, y1 = DEMO_REGION
    return TargetedImagingParams(
        region=Region(x0=x0, y0=y0, x1=x1, y1=y1),
        rules=SelectionRules(min_area_um2=20, max_area_um2=600, max_targets=500),
        backend={"kind": backend, "workers": 1},
        edge_url=edge_url,
        edge_token_file=token_file,
        output_dir=output_dir,
    )


def run_demo(
    data_dir: Path, *, backend: str = "ray", model: str = "classical", quiet: bool = False
) -> dict[str, Any]:
    """Run targeted imaging end to end on the simulator; return the flow's summary."""
    from tasks.hardware import EdgeProcess

    from .targeted_imaging import targeted_imaging

    console = Console(stderr=True, quiet=quiet)
    started = time.perf_counter()
    run_dir = data_dir / datetime.now(UTC).strftime("demo-%Y%m%dT%H%M%SZ")
    edge_args = ["--camera-size", str(DEMO_CAMERA), "--density", str(DEMO_DENSITY)]
    with console.status("starting the simulated edge agent..."):
        edge = EdgeProcess(run_dir / "edge", extra_args=edge_args).start()
    try:
        params = demo_params(edge.url, edge.token_file, run_dir, backend).model_copy(
            update={"model": model}
        )
        with console.status("running targeted imaging (Prefect flow, Ray/Dask workers)..."):
            summary = targeted_imaging(params)
    finally:
        edge.stop()
    summary["wall_s"] = round(time.perf_counter() - started, 2)
    _print_summary(console, summary)
    return summary


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"scopeflow demo: targeted imaging {summary['run_id']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key == "stores":
            table.add_row("run folder", str(value["run_dir"]))
            table.add_row("detail stores", str(len(value["targets"])))
        elif key != "run_id":
            table.add_row(key, str(value))
    console.print(table)


@contextmanager
def simulated_edge(data_dir: Path, config: SimulatorConfig) -> Iterator[EdgeProcess]:
    """A simulated edge agent on 127.0.0.1 showing ``config``'s sample (its seed, square
    camera and clock), stopped on exit, also on error."""
    from tasks.hardware import EdgeProcess

    args = ["--camera-size", str(config.width), "--time-scale", str(config.time_scale)]
    args += ["--seed", str(config.seed), "--density", str(config.nuclei_per_mm2)]
    edge = EdgeProcess(data_dir, extra_args=args).start()
    try:
        yield edge
    finally:
        edge.stop()


def warm_prefect() -> None:
    """Start Prefect's local server (or reach PREFECT_API_URL) now, not in a run's first task."""
    from prefect import flow

    flow(name="warm-up")(lambda: None)()
