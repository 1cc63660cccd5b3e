"""``scopeflow automations apply``: the Prefect automations of deployments/automations.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._errors import ScopeflowError

__all__ = ["register"]

automations_app = typer.Typer(
    help="Prefect automations that react to scopeflow's events.", no_args_is_help=True
)


@automations_app.command("apply")
def apply(
    webhook_url: Annotated[
        str, typer.Option(help="Where notifications are POSTed (JSON: subject, body, name).")
    ],
    file: Annotated[Path, typer.Option(help="The automations file.")] = Path(
        "deployments/automations.yaml"
    ),
) -> None:
    """Create the notification block and (re)create every automation of FILE; prints ids."""
    from tasks.events import apply_automations

    try:
        typer.echo(json.dumps(apply_automations(file, webhook_url)))
    except ScopeflowError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc


def register(app: typer.Typer) -> None:
    """Add the ``automations`` command group to ``app``."""
    app.add_typer(automations_app, name="automations")
