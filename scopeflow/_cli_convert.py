"""`scopeflow convert INPUT OUTPUT.ome.zarr`: one vendor file to one OME-Zarr store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._errors import ConversionError, ScopeflowError

__all__ = ["register"]


def _parse_chunks(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) not in (2, 3, 5) or min(sizes, default=0) < 1:
        raise ConversionError(
            f"--chunks {text!r} is not valid; give 2 (y,x), 3 (z,y,x) or 5 (t,c,z,y,x) positive "
            "sizes separated by commas, e.g. --chunks 1024,1024"
        )
    return sizes


def convert(
    source: Annotated[
        Path,
        typer.Argument(
            help="The vendor file (CZI, OME-TIFF, TIFF, MRC...) or NDTiff dataset folder."
        ),
    ],
    output: Annotated[Path, typer.Argument(help="The new store, e.g. image.ome.zarr.")],
    scene: Annotated[
        int | None, typer.Option(help="Convert only this scene (0-based); default: all.")
    ] = None,
    chunks: Annotated[
        str | None, typer.Option(help="Chunk sizes: y,x or z,y,x or t,c,z,y,x (default 1024,1024).")
    ] = None,
    compression: Annotated[str, typer.Option(help="none, zstd or lz4.")] = "zstd",
) -> None:
    """Convert a vendor microscopy file to OME-Zarr (NGFF 0.5) with a multiscale pyramid."""
    from tasks.storage import COMPRESSIONS
    from tasks.storage.convert import ConvertOptions, convert_file

    from ._cli_fail import fail as _fail

    try:
        if compression not in COMPRESSIONS:
            raise ConversionError(
                f"--compression {compression!r} is not one of {', '.join(COMPRESSIONS)}"
            )
        options = ConvertOptions(
            scene=scene,
            chunks=_parse_chunks(chunks),
            compression=compression,  # type: ignore[arg-type]  # checked just above
        )
        result = convert_file(source, output, options)
    except ScopeflowError as exc:
        _fail(exc)
        return
    except ModuleNotFoundError as exc:
        _fail(
            ConversionError(
                f"cannot convert {source}: the reader needs {exc.name!r}, which is not installed; "
                "install the conversion extra: pip install 'scopeflow[convert]'"
            )
        )
        return
    typer.echo(json.dumps(result.as_json()))


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command to the ``scopeflow`` app."""
    app.command("convert")(convert)
