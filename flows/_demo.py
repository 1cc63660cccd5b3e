"""The embedded demo: targeted imaging on a simulated microscope, with nothing to set up.

Starts the simulated edge agent as a child process on 127.0.0.1, runs the targeted-imaging flow
on Prefect's local mode (or against PREFECT_API_URL when set) with a local Ray cluster, writes
OME-Zarr under ``<data_dir>/<run>/`` and stops everything it started, also on Ctrl-C or error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tasks.decisions import SelectionRules

from ._demo_scope import simulated_scope
from ._targeted_params import Region, TargetedImagingParams

__all__ = ["DEMO_DENSITY", "DEMO_REGION", "demo_params", "run_demo", "start_demo_edge"]

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
    from .targeted_imaging import targeted_imaging

    edge_args = ["--camera-size", str(DEMO_CAMERA), "--density", str(DEMO_DENSITY)]
    with simulated_scope(data_dir, "demo", edge_args, quiet=quiet, warm_prefect=False) as scope:
        params = demo_params(
            scope.edge.url, scope.edge.token_file, scope.run_dir, backend
        ).model_copy(update={"model": model})
        with scope.console.status("running targeted imaging (Prefect flow, Ray/Dask workers)..."):
            summary = targeted_imaging(params)
    summary["wall_s"] = scope.wall_s()
    _print_summary(scope.console, summary)
    return summary


def start_demo_edge(console: Console, edge_dir: Path, edge_args: list[str]) -> Any:
    """A simulated edge agent on 127.0.0.1 (an `EdgeProcess`, started; the caller stops it),
    then Prefect's local server warmed up here rather than mid-run."""
    from prefect import flow

    from tasks.hardware import EdgeProcess

    with console.status("starting the simulated edge agent..."):
        edge = EdgeProcess(edge_dir, extra_args=edge_args).start()
    try:
        with console.status("starting Prefect..."):
            flow(name="warm-up")(lambda: None)()
    except BaseException:
        edge.stop()
        raise
    return edge


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
