"""The `scopeflow` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._cli_fail import fail as _fail
from ._errors import ConfigurationError, ScopeflowError
from ._settings import EdgeMicroscopeSettings, EdgeServeRequest, load_settings

app = typer.Typer(
    help="scopeflow: smart-microscopy workflows (edge agent, flows, inference).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
edge_app = typer.Typer(help="The edge agent that runs on the acquisition PC.", no_args_is_help=True)
app.add_typer(edge_app, name="edge")


@edge_app.command("serve")
def edge_serve(
    simulate: Annotated[
        bool, typer.Option(help="Drive the built-in simulated microscope.")
    ] = False,
    mm_config: Annotated[
        Path | None, typer.Option(help="Micro-Manager configuration file of a real microscope.")
    ] = None,
    driver: Annotated[
        str, typer.Option(help="mmcore (simulator / Micro-Manager) or file-drop (vendor macro).")
    ] = "mmcore",
    drop_dir: Annotated[
        Path | None, typer.Option(help="file-drop: the folder shared with the vendor macro.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8765; 0 = any).")] = None,
    stream_port: Annotated[int | None, typer.Option(help="Fast TCP stream port (0 = any).")] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="Bearer token file (created if missing).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Journal and command-log root.")] = None,
    envelope: Annotated[
        Path | None, typer.Option(help="Safety envelope file (YAML or TOML).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
    camera_size: Annotated[
        int, typer.Option(help="Simulated camera width and height in pixels.")
    ] = 2048,
    time_scale: Annotated[
        float, typer.Option(help="Simulated seconds per real second (cell motion, division).")
    ] = 1.0,
    density: Annotated[
        float | None, typer.Option(help="Simulated nuclei per mm² (default 300).")
    ] = None,
    plate: Annotated[
        str | None,
        typer.Option(help="Simulate a multi-well plate of this useq type, e.g. 96-well."),
    ] = None,
    plate_rotation: Annotated[
        float, typer.Option(help="Rotation of the simulated plate, degrees anti-clockwise.")
    ] = 0.0,
    focus_drift: Annotated[
        bool, typer.Option(help="Simulate thermal focus drift (a few µm per hour, seeded).")
    ] = False,
    sim_config: Annotated[
        Path | None,
        typer.Option(help="YAML of further simulator settings (SimulatorConfig fields)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM); with --tls-key: TLS everywhere.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow plain text on a non-loopback address.")
    ] = False,
    users_file: Annotated[
        Path | None, typer.Option(help="Users and roles (default <data-dir>/users.json).")
    ] = None,
    require_lease: Annotated[
        bool, typer.Option(help="Refuse control requests without the microscope's lease.")
    ] = False,
) -> None:
    """Serve the edge agent: HTTP commands, frame stream, OME-Zarr journal."""
    from tasks.hardware import serve_edge

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {
        "host": host,
        "port": port,
        "stream_port": stream_port,
        "token_file": token_file,
        "data_dir": data_dir,
        "envelope_file": envelope,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "users_file": users_file,
        "insecure": insecure or None,
        "require_lease": require_lease or None,
    }
    service = load_settings().edge.model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )
    if driver not in ("mmcore", "file-drop"):
        _fail(ConfigurationError(f"--driver {driver!r}: use mmcore or file-drop"))
    microscope = EdgeMicroscopeSettings(
        driver=driver,  # type: ignore[arg-type]  # validated by the model
        drop_dir=drop_dir,
        simulate=simulate,
        mm_config=mm_config,
        seed=seed,
        camera_width=camera_size,
        camera_height=camera_size,
        time_scale=time_scale,
        nuclei_per_mm2=density,
        plate=plate,
        plate_rotation_deg=plate_rotation,
        sim_config=sim_config,
        focus_drift=focus_drift,
    )
    request = EdgeServeRequest(service=service, microscope=microscope)
    try:
        serve_edge(request)
    except ScopeflowError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass
    # the edge closed everything it owns (journal, logs, ring, core); interpreter finalization
    # with a daemon thread still inside C++ code aborted now and then ("FATAL: exception not
    # rethrown", exit -6, about 1 stop in 12 after a crash-restart): end here instead
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@edge_app.command("openapi")
def edge_openapi() -> None:
    """Print the edge's HTTP API as an OpenAPI document (JSON)."""
    from tasks.hardware import edge_openapi as document

    typer.echo(json.dumps(document(), indent=1))


DEMOS = (
    "targeted-imaging",
    "tracking",
    "event-triggered",
    "em-qc",
    "plate",
    "adaptive-illumination",
    "stimulation",
    "optimise",
    "autofocus",
    "uncertainty",
)


@app.command()
def demo(
    experiment: Annotated[
        str, typer.Argument(help=f"Which experiment: {', '.join(DEMOS)}.")
    ] = "targeted-imaging",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    data_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path(
        "scopeflow-data"
    ),
    backend: Annotated[
        str, typer.Option(help="Compute backend: ray or dask (em-qc also: threads).")
    ] = "ray",
    model: Annotated[
        str | None,
        typer.Option(help="Segmentation model (default: classical; unet for tracking)."),
    ] = None,
    time_points: Annotated[
        int, typer.Option(help="Tracking: time points (adaptive-illumination: 20 by default).")
    ] = 100,
    positions: Annotated[
        int, typer.Option(help="Tracking: positions (adaptive-illumination: 6 by default).")
    ] = 2,
    seed: Annotated[int, typer.Option(help="Simulator seed (all but targeted-imaging).")] = 0,
    ui: Annotated[
        bool,
        typer.Option(
            "--ui",
            help="Report to a Prefect server whose UI stays up after the demo, to look at the "
            "run (its URL is printed); Ctrl-C stops it.",
        ),
    ] = False,
    ui_port: Annotated[
        int, typer.Option(help="--ui: the server's port on 127.0.0.1 (0: any free port).")
    ] = 4200,
    duration_s: Annotated[
        float, typer.Option(help="Event-triggered: wall-clock seconds watched.")
    ] = 60.0,
    predictor: Annotated[
        str | None,
        typer.Option(help="Uncertainty: virtual-stain or carry-forward (default: the params')."),
    ] = None,
) -> None:
    """An experiment on a simulated microscope, end to end, with nothing to set up."""
    # Prefect's temporary server would try to send usage data (there may be no network) and
    # its first write raced the flow's: an error and a "database is locked" traceback
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # a loaded acquisition PC starts the temporary server slowly (20 s is Prefect's default)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows import DemoUI, run_demo, run_em_qc_demo, run_tracking_demo

    if experiment not in DEMOS:
        _fail(ScopeflowError(f"unknown demo {experiment!r}; choose one of {', '.join(DEMOS)}"))
        return
    server = DemoUI(data_dir, ui_port) if ui else None
    try:
        if server is not None:
            server.start()
        if experiment == "plate":
            from flows import run_plate_demo

            summary = run_plate_demo(
                data_dir, backend=backend, model=model or "unet", seed=seed, quiet=as_json
            )
        elif experiment == "em-qc":
            summary = run_em_qc_demo(data_dir, backend=backend, seed=seed, quiet=as_json)
        elif experiment == "event-triggered":
            from flows import run_event_demo

            summary = run_event_demo(
                data_dir,
                duration_s=duration_s,
                positions=positions,
                model=model or "classical",
                backend=backend,
                seed=seed,
                quiet=as_json,
            )
        elif experiment == "autofocus":
            from flows import run_focus_demo

            summary = run_focus_demo(data_dir, seed=seed, backend=backend, quiet=as_json)  # type: ignore[arg-type]
        elif experiment == "uncertainty":
            from flows import run_uncertainty_demo

            summary = run_uncertainty_demo(
                data_dir, backend=backend, seed=seed, quiet=as_json, predictor=predictor
            )
        elif experiment == "optimise":
            from flows import run_optimise_demo

            summary = run_optimise_demo(data_dir, backend=backend, seed=seed, quiet=as_json)
        elif experiment == "stimulation":
            from flows import run_stimulation_demo

            summary = run_stimulation_demo(
                data_dir,
                duration_s=duration_s,
                positions=positions,
                model=model or "classical",
                backend=backend,
                seed=seed,
                quiet=as_json,
            )
        elif experiment == "adaptive-illumination":
            from flows import run_illumination_demo

            summary = run_illumination_demo(
                data_dir,
                positions=positions if positions != 2 else 6,
                time_points=time_points if time_points != 100 else 20,
                model=model or "classical",
                backend=backend,
                seed=seed,
                quiet=as_json,
            )
        elif experiment == "tracking":
            summary = run_tracking_demo(
                data_dir,
                time_points=time_points,
                positions=positions,
                model=model or "unet",
                backend=backend,
                seed=seed,
                quiet=as_json,
            )
        else:
            summary = run_demo(data_dir, backend=backend, model=model or "classical", quiet=as_json)
        if server is not None:
            summary["ui_url"] = server.flow_run_url(experiment)
        if as_json:
            typer.echo(json.dumps(summary))
        if server is not None:
            typer.secho(
                f"Prefect UI: {summary['ui_url']} (the server keeps running; Ctrl-C stops it)",
                fg=typer.colors.GREEN,
                err=True,
            )
            server.serve_until_interrupted()
    except ScopeflowError as exc:
        _fail(exc)
        return
    finally:
        if server is not None:
            server.close()


run_app = typer.Typer(help="Run an experiment flow against an edge agent.", no_args_is_help=True)
app.add_typer(run_app, name="run")


@app.command()
def version() -> None:
    """Print the scopeflow version."""
    from . import __version__

    typer.echo(__version__)


# -- command groups that live in their own modules register themselves below --
from ._cli_convert import register as _register_convert  # noqa: E402

_register_convert(app)

from ._cli_images import register as _register_images  # noqa: E402

_register_images(app)

from ._cli_omero import register as _register_omero  # noqa: E402

_register_omero(app)
from ._cli_batch import register as _register_batch  # noqa: E402

_register_batch(app)

from ._cli_track import register as _register_track  # noqa: E402

_register_track(app)

from ._cli_edge_access import register as _register_edge_access  # noqa: E402

_register_edge_access(edge_app)

from ._cli_run import register as _register_run  # noqa: E402

_register_run(run_app)
from ._cli_acquire import register as _register_acquire  # noqa: E402

_register_acquire(run_app)
from ._cli_qc import register as _register_qc  # noqa: E402

_register_qc(app)

from ._cli_events import register as _register_events  # noqa: E402

_register_events(app)
