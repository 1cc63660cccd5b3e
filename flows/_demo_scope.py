"""What every ``scopeflow demo`` shares: a simulated edge agent in a fresh run folder, Prefect
warmed up before the run (its local server starts here, not mid-experiment), the sample's
clock, and the summary printed as a table."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tasks.hardware import EdgeClient, EdgeProcess

__all__ = ["DemoScope", "print_summary", "simulated_scope"]


@dataclass
class DemoScope:
    """A running simulated microscope for one demo run."""

    edge: EdgeProcess
    run_dir: Path
    console: Console
    started: float = field(default_factory=time.perf_counter)

    def connection(self) -> dict[str, Any]:
        """The edge fields of a flow's parameters (``MicroscopeConnection``)."""
        return {"edge_url": self.edge.url, "edge_token_file": self.edge.token_file}

    def sample_time_s(self) -> float:
        """The simulated sample's clock now (it runs at the edge's ``--time-scale``)."""
        with EdgeClient(self.edge.url, token_file=self.edge.token_file) as client:
            return float(client.truth((0.0, 0.0, 1.0, 1.0))["t_s"])

    def wall_s(self) -> float:
        return round(time.perf_counter() - self.started, 1)


@contextlib.contextmanager
def simulated_scope(
    data_dir: Path,
    folder: str,
    edge_args: Sequence[str] | Callable[[Path], Sequence[str]],
    *,
    quiet: bool = False,
    what: str = "the simulated edge agent",
    warm_prefect: bool = True,
) -> Iterator[DemoScope]:
    """Start a simulated edge in ``data_dir/<folder>-<UTC time>/edge``; stopped on exit.
    ``edge_args`` are ``scopeflow edge serve --simulate`` options (camera size, seed, ...), or
    a function of the run folder that writes the files they name (an envelope) and returns them."""
    console = Console(stderr=True, quiet=quiet)
    started = time.perf_counter()
    run_dir = data_dir / datetime.now(UTC).strftime(f"{folder}-%Y%m%dT%H%M%SZ")
    if callable(edge_args):
        run_dir.mkdir(parents=True, exist_ok=True)
        edge_args = edge_args(run_dir)
    with console.status(f"starting {what}..."):
        edge = EdgeProcess(run_dir / "edge", extra_args=list(edge_args)).start()
    try:
        if warm_prefect:
            from prefect import flow

            with console.status("starting Prefect..."):
                flow(name="warm-up")(lambda: None)()
        yield DemoScope(edge, run_dir, console, started)
    finally:
        edge.stop()


def print_summary(
    console: Console, title: str, summary: dict[str, Any], *, skip: Iterable[str] = ("stores",)
) -> None:
    """The summary as a two-column table (nested values as they print)."""
    left_out = set(skip)
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key not in left_out:
            table.add_row(key, str(value))
    console.print(table)
