"""The embedded demo: targeted imaging on a simulated microscope, with nothing to set up.

Starts the simulated edge agent as a child process on 127.0.0.1, runs the targeted-imaging flow
on Prefect's local mode (or against PREFECT_API_URL when set) with a local Ray cluster, writes
OME-Zarr under ``<data_dir>/<run>/`` and stops everything it started, also on Ctrl-C or error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from tasks.decisions import SelectionRules

from ._targeted_params import Region, TargetedImagingParams

if TYPE_CHECKING:
    from tasks.hardware import EdgeProcess

__all__ = [
    "DEMO_DENSITY",
    "DEMO_REGION",
    "demo_params",
    "print_demo_table",
    "run_demo",
    "simulated_edge",
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


@contextlib.contextmanager
def simulated_edge(
    edge_dir: Path, edge_args: list[str], console: Console, *, warm_prefect: bool = True
) -> Iterator[EdgeProcess]:
    """A simulated edge agent as a child process (stopped on leaving, also on error), and
    Prefect's local server started here rather than in the middle of a run."""
    from prefect import flow

    from tasks.hardware import EdgeProcess

    with console.status("starting the simulated edge agent..."):
        edge = EdgeProcess(edge_dir, extra_args=edge_args).start()
    try:
        if warm_prefect:
            with console.status("starting Prefect..."):
                flow(name="warm-up")(lambda: None)()
        yield edge
    finally:
        edge.stop()


def print_demo_table(
    console: Console, title: str, summary: dict[str, Any], skip: tuple[str, ...] = ("stores",)
) -> None:
    """A demo's summary as a two-column table (on stderr unless the console is quiet)."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key not in skip:
            table.add_row(key, str(value))
    console.print(table)
