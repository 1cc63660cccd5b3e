"""`scopeflow run acquire --sequence FILE.yaml`: a useq-schema MDASequence through an edge agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_fail import fail as _fail
from ._cli_run import fill_edge_address
from ._errors import ScopeflowError

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
    import yaml
    from pydantic import ValidationError

    from flows import AcquireParams
    from flows.acquire import acquire

    data: dict[str, Any] = {}
    if params is not None:
        try:
            data = yaml.safe_load(params.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            _fail(ScopeflowError(f"cannot read parameters from {params}: {exc}"))
            return
        if not isinstance(data, dict):
            _fail(ScopeflowError(f"{params} must hold a mapping of AcquireParams fields"))
            return
    data["sequence"] = str(sequence)
    if fast:
        data["fast"] = True
    for key, value in (("output_dir", output_dir), ("run_id", run_id)):
        if value is not None:
            data[key] = str(value)
    fill_edge_address(data, edge_url, token_file)
    try:
        parsed = AcquireParams.model_validate(data)
    except ValidationError as exc:
        _fail(ScopeflowError(f"acquire parameters are not valid:\n{exc}"))
        return
    try:
        summary = acquire(parsed)
    except ScopeflowError as exc:
        _fail(exc)
        return
    typer.echo(json.dumps(summary))


def register(run_app: typer.Typer) -> None:
    run_app.command("acquire")(run_acquire)
