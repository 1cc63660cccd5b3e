"""`scopeflow run NAME --params FILE.yaml`: any experiment flow against any edge agent."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from ._cli_fail import fail as _fail
from ._errors import ScopeflowError
from ._settings import load_settings

__all__ = [
    "FLOW_COMMANDS",
    "FlowCommand",
    "fill_edge_address",
    "read_params",
    "register",
    "run_flow",
    "run_validated",
]

_EDGE_URL_HELP = "Edge agent URL (default: the parameters, then SCOPEFLOW_EDGE_URL)."
_TOKEN_FILE_HELP = (
    "The edge's token file (default: the parameters, then SCOPEFLOW_EDGE_TOKEN_FILE)."
)


@dataclass(frozen=True)
class FlowCommand:
    """``scopeflow run <name>``: ``params`` (a class exported by ``flows``) validated from the
    file, then the flow ``module:function`` run with them."""

    name: str
    summary: str
    params: str
    flow: str


FLOW_COMMANDS = (
    FlowCommand(
        "targeted-imaging",
        "Overview -> segment -> decide -> detail z-stacks, against any edge agent.",
        "TargetedImagingParams",
        "flows.targeted_imaging:targeted_imaging",
    ),
    FlowCommand(
        "tracking",
        "Follow cells at several positions, re-centring every time point, against any edge.",
        "TrackingParams",
        "flows.tracking:tracking",
    ),
    FlowCommand(
        "plate",
        "Targeted imaging in every selected well of a multi-well plate, stored as an OME-Zarr "
        "HCS plate (PlateScreenParams: plate, calibration, wells, fields, ...).",
        "PlateScreenParams",
        "flows.plate_screen:plate_screen",
    ),
    FlowCommand(
        "event-triggered",
        "Watch positions gently, image each detected event fast, against any edge.",
        "EventTriggeredParams",
        "flows.event_triggered:event_triggered",
    ),
    FlowCommand(
        "optimise",
        "Find the exposure, intensity and binning with the best image for the light spent "
        "(Bayesian optimisation against a grid search), against any edge.",
        "OptimiseAcquisitionParams",
        "flows.optimise_acquisition:optimise_acquisition",
    ),
    FlowCommand(
        "stimulate-on-event",
        "Event-triggered imaging that stimulates each event's cell (DMD) and perfuses (pump).",
        "StimulateOnEventParams",
        "flows.stimulate_on_event:stimulate_on_event",
    ),
    FlowCommand(
        "adaptive-illumination",
        "Image each position's cell at a target SNR with the least light, within the edge's "
        "light-dose budget, against any edge.",
        "AdaptiveIlluminationParams",
        "flows.adaptive_illumination:adaptive_illumination",
    ),
    FlowCommand(
        "autofocus",
        "A time-lapse that finds focus (a z sweep scored on workers) before every time point.",
        "FocusTimelapseParams",
        "flows.focus_timelapse:autofocus_timelapse",
    ),
    FlowCommand(
        "uncertainty",
        "Image the cheap channel, acquire the expensive one only where its prediction is unsure.",
        "UncertaintyParams",
        "flows.uncertainty_triggered:uncertainty_triggered",
    ),
)


def register(run_app: typer.Typer) -> None:
    for command in FLOW_COMMANDS:
        run_app.command(command.name, help=command.summary)(_command(command))


def _command(command: FlowCommand) -> Callable[..., None]:
    def run(
        params: Annotated[Path, typer.Option(help="Flow parameters (YAML or JSON).")],
        edge_url: Annotated[str | None, typer.Option(help=_EDGE_URL_HELP)] = None,
        token_file: Annotated[Path | None, typer.Option(help=_TOKEN_FILE_HELP)] = None,
    ) -> None:
        import flows  # the flows and Prefect load only for the command that runs

        module, function = command.flow.split(":")
        flow = getattr(importlib.import_module(module), function)
        run_flow(params, edge_url, token_file, getattr(flows, command.params), flow)

    return run


def run_flow(
    params: Path,
    edge_url: str | None,
    token_file: Path | None,
    model: type[BaseModel],
    run: Callable[[Any], dict[str, Any]],
) -> None:
    """Load ``params`` as ``model`` (edge address from the options, the file or the settings),
    run the flow, print its summary as JSON; every failure is one clear message."""
    data = read_params(params, model)
    fill_edge_address(data, edge_url, token_file)
    run_validated(data, model, run, f"parameters in {params}")


def read_params(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """The mapping of ``model``'s fields in the YAML or JSON file ``path``."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        _fail(ScopeflowError(f"cannot read parameters from {path}: {exc}"))
    if not isinstance(data, dict):
        _fail(ScopeflowError(f"{path} must hold a mapping of {model.__name__} fields"))
    return data


def run_validated(
    data: dict[str, Any], model: type[BaseModel], run: Callable[[Any], dict[str, Any]], what: str
) -> None:
    """``run(model(data))``, its summary printed as JSON; ``what``: the data, for the error."""
    from pydantic import ValidationError

    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        _fail(ScopeflowError(f"{what} are not valid:\n{exc}"))
    try:
        summary = run(parsed)
    except ScopeflowError as exc:
        _fail(exc)
    typer.echo(json.dumps(summary))


def fill_edge_address(
    data: dict[str, object], edge_url: str | None, token_file: Path | None
) -> None:
    """The edge to run against: the command line, else the parameters file, else the settings
    (``SCOPEFLOW_EDGE_URL``, ``SCOPEFLOW_EDGE_TOKEN_FILE``)."""
    settings = load_settings()
    if edge_url:
        data["edge_url"] = edge_url
    elif not data.get("edge_url"):
        data["edge_url"] = settings.edge_url
    if token_file:
        data["edge_token_file"] = str(token_file)
    elif not data.get("edge_token_file") and settings.edge_token_file is not None:
        data["edge_token_file"] = str(settings.edge_token_file)
