"""``scopeflow omero``: register images, drain the spool, check the connection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._cli_fail import fail as _fail
from ._errors import ScopeflowError
from ._settings import load_settings

__all__ = ["register"]

omero_app = typer.Typer(
    help="Register images in OMERO (settings: SCOPEFLOW_OMERO_HOST, ... or scopeflow.toml).",
    no_args_is_help=True,
)


@omero_app.command("check")
def check() -> None:
    """Connect and log in; print server, user and group as JSON."""
    from tasks.storage.omero import OmeroRegistrar

    try:
        with OmeroRegistrar(load_settings().omero) as registrar:
            typer.echo(json.dumps(registrar.check()))
    except ScopeflowError as exc:
        _fail(exc)


@omero_app.command("register")
def register_image(
    path: Annotated[Path, typer.Argument(help="An OME-Zarr image, or a folder of them.")],
    project: Annotated[str, typer.Option(help="OMERO project (created when missing).")],
    dataset: Annotated[str, typer.Option(help="OMERO dataset in it (created when missing).")],
    run_id: Annotated[str | None, typer.Option(help="The scopeflow run id to record.")] = None,
    metadata: Annotated[
        Path | None, typer.Option(help="JSON file of acquisition metadata (key-value pairs).")
    ] = None,
    spool: Annotated[
        bool, typer.Option(help="Queue it in the spool (spill_dir) instead of waiting for OMERO.")
    ] = False,
) -> None:
    """Register PATH now and print the OMERO ids (or, with --spool, queue it and print its key)."""
    from tasks.storage.omero import OmeroRegistrar, OmeroSpool, RegistrationRequest

    settings = load_settings().omero
    try:
        extra = json.loads(metadata.read_text()) if metadata else {}
    except (OSError, ValueError) as exc:
        _fail(ScopeflowError(f"cannot read metadata from {metadata}: {exc}; pass a JSON object"))
        return
    request = RegistrationRequest(
        path=path.resolve(), project=project, dataset=dataset, run_id=run_id, metadata=extra
    )
    try:
        with OmeroRegistrar(settings) as registrar:
            if spool:
                key = OmeroSpool.from_settings(settings, registrar).submit(request)
                typer.echo(json.dumps({"queued": key, "spill_dir": str(settings.spill_dir)}))
                return
            result = registrar.register(request)
    except ScopeflowError as exc:
        _fail(exc)
        return
    typer.echo(result.model_dump_json())


@omero_app.command("drain")
def drain(
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    retry_failed: Annotated[
        bool, typer.Option(help="Queue the failed registrations again first.")
    ] = False,
) -> None:
    """Deliver what waits in the spool (spill_dir); exit 1 when some is left or failed."""
    from tasks.storage.omero import OmeroRegistrar, OmeroSpool

    settings = load_settings().omero
    try:
        with OmeroRegistrar(settings) as registrar:
            spool = OmeroSpool.from_settings(settings, registrar)
            if retry_failed:
                spool.requeue_failed()
            try:
                empty = spool.drain(timeout=timeout)
                stats = spool.stats()
            finally:
                spool.close()
    except ScopeflowError as exc:
        _fail(exc)
        return
    typer.echo(
        json.dumps(
            {
                "spill_dir": str(settings.spill_dir),
                "delivered": stats.delivered,
                "pending": stats.pending,
                "failed": stats.failed,
                "last_error": stats.last_error,
            }
        )
    )
    if not empty or stats.failed:
        for name, reason in spool.failures():
            typer.secho(f"failed {name}: {reason}", fg=typer.colors.RED, err=True)
        if not empty:
            typer.secho(
                f"{stats.pending} registration(s) still wait: {stats.last_error}",
                fg=typer.colors.RED,
                err=True,
            )
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``omero`` command group to ``app``."""
    app.add_typer(omero_app, name="omero")
