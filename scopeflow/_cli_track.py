"""`scopeflow track-dataset MOVIE --out RES_DIR`: a stored time-lapse into CTC RES format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_fail import fail as _fail
from ._errors import ScopeflowError

__all__ = ["register"]


def track_dataset_cmd(
    movie: Annotated[
        Path,
        typer.Argument(
            help="The time-lapse: an OME-Zarr image with a t axis, a TIFF stack, or a folder of "
            "per-frame TIFFs (t000.tif, ...)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The RES folder to write (new or empty).")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Per-frame instance masks in the same forms (e.g. a CTC TRA or SEG folder): "
            "link only, no segmentation."
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="Segmentation model when no --labels.")] = "classical",
    model_options: Annotated[
        str, typer.Option(help="Model options as JSON, e.g. '{\"nucleus_radius_um\": 4}'.")
    ] = "{}",
    profile: Annotated[
        str | None,
        typer.Option(
            help="Compute profile whose workers segment the frames (see `scopeflow profiles`); "
            "default: in this process."
        ),
    ] = None,
    channel: Annotated[int | None, typer.Option(help="Channel index, if several.")] = None,
    z: Annotated[int | None, typer.Option(help="z plane index, if several.")] = None,
    position: Annotated[
        int | None, typer.Option(help="Series / position index, if several.")
    ] = None,
    pixel_size: Annotated[
        float | None, typer.Option(help="Pixel size in µm (default: from the file).")
    ] = None,
    min_overlap: Annotated[
        float, typer.Option(help="Least IoU for a link (and share of a daughter in its mother).")
    ] = 0.1,
    gt: Annotated[
        Path | None,
        typer.Option(help="CTC ground truth (the folder holding TRA/): print the CTC scores."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary object.")] = False,
) -> None:
    """Track a stored movie (segment, or --labels to only link) into CTC RES format."""
    from pydantic import ValidationError

    from flows import TrackDatasetParams
    from flows.track_dataset import check_track_inputs, track_dataset

    try:
        options = json.loads(model_options)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--model-options is not JSON: {exc}") from exc
    try:
        params = TrackDatasetParams(
            movie=movie,
            out=out,
            labels=labels,
            model=model,
            model_options=options,
            profile=profile,
            channel=channel,
            z=z,
            position=position,
            pixel_size_um=pixel_size,
            min_overlap=min_overlap,
            ground_truth=gt,
        )
    except ValidationError as exc:
        _fail(ScopeflowError(f"the options are not valid:\n{exc}"))
        return
    try:
        check_track_inputs(params)  # clear errors before a flow run starts
        summary = track_dataset(params)
    except ScopeflowError as exc:
        _fail(exc)
        return
    typer.echo(json.dumps(summary, default=str) if as_json else _report(summary))


def _report(summary: dict[str, Any]) -> str:
    how = "linked the given masks" if summary["mode"] == "link" else "segmented and linked"
    height, width = summary["frame_shape"]
    lines = [
        f"{summary['movie']}: {how} over {summary['frames']} frames ({height}x{width}): "
        f"{summary['objects']} objects, {summary['tracks']} tracks, "
        f"{summary['divisions']} divisions",
        f"CTC RES written to {summary['out']} ({summary['seconds']:.1f} s)",
    ]
    scores = summary.get("scores")
    if scores:
        main = [f"{k} {scores[k]:.4f}" for k in ("TRA", "DET", "LNK") if scores.get(k) is not None]
        bc = [f"{k} {v:.4f}" for k, v in scores.items() if k.startswith("BC(") and v is not None]
        lines.append(f"CTC scores against {summary['ground_truth']}: " + ", ".join(main + bc))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``track-dataset`` to the ``scopeflow`` app."""
    app.command("track-dataset")(track_dataset_cmd)
