"""Convert a folder of vendor microscopy files to OME-Zarr: one task per file.

A file that cannot be converted (corrupt, unsupported) is recorded as failed with the reason and
the others go on; unexpected errors (a network share dropping, a read timing out) are retried.
Files whose store already exists are skipped, so re-running the flow converts only what is new.
A table artifact lists every file: converted, skipped or failed, and why. A Micro-Manager NDTiff
dataset (a folder with ``NDTiff.index``) is one source, converted as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from scopeflow import ConversionError
from tasks.storage import ConversionResult, ConvertOptions, convert_file
from tasks.storage.convert import SUFFIXES, ndtiff_dataset_folder

__all__ = [
    "CONVERSION_FINISHED",
    "ConvertFolderParams",
    "conversion_sources",
    "convert_folder",
    "convert_one",
    "image_paths",
]


class ConvertFolderParams(BaseModel):
    """What to convert and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["convert-folder"] = "convert-folder"
    input_folder: Path = Field(description="Folder holding the vendor files.")
    output_folder: Path = Field(description="Folder receiving one NAME.ome.zarr per file.")
    recursive: bool = Field(default=False, description="Also convert files in sub-folders.")
    chunks: tuple[int, ...] | None = Field(default=None, description="y,x / z,y,x / t,c,z,y,x.")
    compression: Literal["none", "zstd", "lz4"] = "zstd"


def store_name(source: Path) -> str:
    """``cells.ome.tiff`` -> ``cells.ome.zarr``: the file name without its format suffix."""
    lower = source.name.lower()
    suffix = next((s for s in sorted(SUFFIXES, key=len, reverse=True) if lower.endswith(s)), "")
    return f"{source.name[: len(source.name) - len(suffix)]}.ome.zarr"


def conversion_sources(folder: Path, recursive: bool) -> list[Path]:
    """The files in ``folder`` (and below, when ``recursive``), with each NDTiff dataset (a
    folder holding ``NDTiff.index``) as one source instead of its stack files."""
    if ndtiff_dataset_folder(folder):
        return [folder]
    sources: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() or ndtiff_dataset_folder(entry):
            sources.append(entry)
        elif recursive and entry.is_dir():
            sources.extend(conversion_sources(entry, recursive))
    return sources


@task(
    retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE, task_run_name="convert {source.name}"
)
def convert_one(source: Path, output: Path, options: ConvertOptions) -> dict[str, Any]:
    """Convert one file; a ConversionError becomes a ``failed`` row, anything else is retried."""
    row: dict[str, Any] = {"file": str(source), "output": str(output)}
    if output.exists():
        return {**row, "status": "skipped", "reason": "already converted (output exists)"}
    try:
        result = convert_file(source, output, options)
    except ConversionError as exc:
        get_run_logger().warning("%s", exc)
        return {**row, "status": "failed", "reason": str(exc)}
    for image in image_paths(result):
        announce_image(image, result)
    megabytes = result.pixel_bytes / 1e6
    return {
        **row,
        "status": "converted",
        "reason": f"{result.format_name}, {len(result.scenes)} scene(s)",
        "megabytes": round(megabytes, 3),
        "seconds": round(result.seconds, 3),
    }


CONVERSION_FINISHED = "scopeflow.conversion.finished"


def image_paths(result: ConversionResult) -> list[Path]:
    """The OME-Zarr image groups one conversion wrote: the store, or each scene of a
    bioformats2raw layout (``0/``, ``1/``, ...)."""
    if len(result.scenes) <= 1:
        return [result.output]
    return [result.output / str(i) for i in range(len(result.scenes))]


def announce_image(image: Path, result: ConversionResult) -> None:
    """Emit ``scopeflow.conversion.finished`` for ``image``: deployments with an event trigger
    (``deployments/prefect.yaml``: segment each converted image) start from it."""
    from prefect.events import emit_event

    emit_event(
        event=CONVERSION_FINISHED,
        resource={"prefect.resource.id": f"scopeflow.image.{image}", "path": str(image)},
        payload={"path": str(image), "source": str(result.source), "format": result.format_name},
    )


@flow(name="convert-folder", log_prints=False)
def convert_folder(params: ConvertFolderParams) -> dict[str, Any]:
    """Convert every supported file in ``params.input_folder``; returns counts and rows."""
    if not params.input_folder.is_dir():
        raise ConversionError(
            f"{params.input_folder} is not a folder; give the folder holding the vendor files"
        )
    params.output_folder.mkdir(parents=True, exist_ok=True)
    files = conversion_sources(params.input_folder, params.recursive)
    options = ConvertOptions(chunks=params.chunks, compression=params.compression)
    rows: list[dict[str, Any]] = []
    futures = []
    for source in files:
        if source.is_file() and not source.name.lower().endswith(SUFFIXES):
            rows.append(
                {
                    "file": str(source),
                    "output": "",
                    "status": "skipped",
                    "reason": "not a microscopy format scopeflow converts",
                }
            )
            continue
        output = params.output_folder / store_name(source)
        futures.append((source, output, convert_one.submit(source, output, options)))
    for source, output, future in futures:
        future.wait()
        state = future.state
        if state.is_completed():
            rows.append(future.result())
        else:
            error = state.result(raise_on_failure=False)
            rows.append(
                {
                    "file": str(source),
                    "output": str(output),
                    "status": "failed",
                    "reason": f"{type(error).__name__}: {error} (after retries)",
                }
            )
    table = [
        {k: row.get(k, "") for k in ("file", "status", "reason", "output", "megabytes", "seconds")}
        for row in rows
    ]
    create_table_artifact(table, key="convert-folder", description="Files converted to OME-Zarr")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("converted", "skipped", "failed")}
    get_run_logger().info(  # one dict as the only argument is taken for %(name)s mapping
        "conversion: %d converted, %d skipped, %d failed", *counts.values()
    )
    return {**counts, "rows": rows}
