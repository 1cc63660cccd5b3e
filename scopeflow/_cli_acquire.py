"""`scopeflow run acquire --sequence FILE.yaml`: a useq-schema MDASequence through an edge agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._cli_run import fill_edge_address, read_params, run_validated

__all__ = ["register"]


def run_acquire(
    sequence: Annotated[
        Path, typer.Option(help="The useq-schema MDASequence to run (YAML or JSON).")
    ],
    params: Annotated[
        Path | None,
        typer.Option(help="More flow parameters (YAML or JSON: AcquireParams, e.g. analysis)."),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Rehearse: no waits between time points, exposures at most 1 ms (same events).",
        ),
    ] = False,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where the run's folder goes (default ./scopeflow-data).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="A crashed run's id, to resume it without re-acquiring.")
    ] = None,
    edge_url: Annotated[
        str | None,
        typer.Option(help="Edge agent URL (default: the parameters, then SCOPEFLOW_EDGE_URL)."),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="The edge's token file (default: the parameters, then settings)."),
    ] = None,
) -> None:
    """Run a useq MDASequence on any edge; one OME-Zarr per field of view, with its axes."""
    from flows import AcquireParams
    from flows.acquire import acquire

    data = {} if params is None else read_params(params, AcquireParams)
    data["sequence"] = str(sequence)
    if fast:
        data["fast"] = True
    for key, value in (("output_dir", output_dir), ("run_id", run_id)):
        if value is not None:
            data[key] = str(value)
    fill_edge_address(data, edge_url, token_file)
    run_validated(data, AcquireParams, acquire, "acquire parameters")


def register(run_app: typer.Typer) -> None:
    run_app.command("acquire")(run_acquire)
