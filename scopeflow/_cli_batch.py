"""`scopeflow segment-dataset`, `scopeflow restore-dataset`, `scopeflow profiles`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._cli_fail import fail as _fail
from ._errors import ScopeflowError

__all__ = ["register"]

ProfileOpt = Annotated[str, typer.Option(help="Compute profile (see `scopeflow profiles`).")]
TileOpt = Annotated[int, typer.Option(help="Tile (and output chunk) size in pixels.")]
OptionsOpt = Annotated[
    str, typer.Option("--model-options", help="Model options as JSON, e.g. '{\"sigma\": 2}'.")
]


def _options(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--model-options is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter("--model-options must be a JSON object")
    return value


def segment_dataset_cmd(
    image: Annotated[Path, typer.Argument(help="OME-Zarr image group to segment.")],
    model: Annotated[str, typer.Option(help="Segmentation model.")] = "classical",
    model_options: OptionsOpt = "{}",
    label_name: Annotated[str, typer.Option(help="Name under image/labels/.")] = "nuclei",
    profile: ProfileOpt = "local",
    tile: TileOpt = 512,
    halo: Annotated[int, typer.Option(help="Context pixels on each tile side.")] = 32,
) -> None:
    """Segment a stored OME-Zarr image on a cluster into image/labels/NAME (resumes)."""
    from flows.segment_dataset import SegmentDatasetParams, segment_dataset

    params = SegmentDatasetParams(
        image=image,
        model=model,
        model_options=_options(model_options),
        label_name=label_name,
        profile=profile,
        tile=tile,
        halo=halo,
    )
    try:
        typer.echo(json.dumps(segment_dataset(params), default=str))
    except ScopeflowError as exc:
        _fail(exc)


def restore_dataset_cmd(
    image: Annotated[Path, typer.Argument(help="OME-Zarr image group to restore.")],
    output: Annotated[Path | None, typer.Option(help="New image store.")] = None,
    model: Annotated[str, typer.Option(help="Restoration model.")] = "gaussian",
    model_options: OptionsOpt = "{}",
    profile: ProfileOpt = "local",
    tile: TileOpt = 512,
    halo: Annotated[int, typer.Option(help="Context pixels on each tile side.")] = 16,
) -> None:
    """Restore (denoise) a stored OME-Zarr image on a cluster into a new image (resumes)."""
    from flows.restore_dataset import RestoreDatasetParams, restore_dataset

    params = RestoreDatasetParams(
        image=image,
        output=output,
        model=model,
        model_options=_options(model_options),
        profile=profile,
        tile=tile,
        halo=halo,
    )
    try:
        typer.echo(json.dumps(restore_dataset(params), default=str))
    except ScopeflowError as exc:
        _fail(exc)


def profiles_cmd(
    job_script: Annotated[
        str | None, typer.Option(help="Print the batch job script of this SLURM/PBS profile.")
    ] = None,
) -> None:
    """List the compute profiles (built-in and from the settings file)."""
    from tasks.compute import available_profiles, get_profile
    from tasks.compute import job_script as make_script

    try:
        if job_script is not None:
            profile = get_profile(job_script)
            if profile.kind not in ("slurm", "pbs"):
                _fail(ScopeflowError(f"profile {job_script!r} is {profile.kind}: no job script"))
            typer.echo(make_script(profile))  # type: ignore[arg-type]
            return
        for name, profile in sorted(available_profiles().items()):
            typer.echo(f"{name}: {profile.model_dump_json(exclude_defaults=True)}")
    except ScopeflowError as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    """Add the batch commands to the `scopeflow` app."""
    app.command("segment-dataset")(segment_dataset_cmd)
    app.command("restore-dataset")(restore_dataset_cmd)
    app.command("profiles")(profiles_cmd)
