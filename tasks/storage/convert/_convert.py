"""Convert one vendor file to one OME-Zarr store, atomically.

The store is written under a hidden temporary name beside the output and renamed into place
only when complete, so the output path holds either nothing or a whole, valid store.
Layout: a single image at the root when the file has one scene (or ``scene`` is chosen);
otherwise a bioformats2raw layout (``0/``, ``1/``, ... and an ``OME`` group listing them).
The source's own metadata document is kept verbatim as ``OME/METADATA.<kind>``.
"""

from __future__ import annotations

import errno
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scopeflow import ConversionError

from .._ngff import Compression
from ._formats import open_source
from ._model import SourceReader
from ._writer import ImageWriter

__all__ = ["ConversionResult", "ConvertOptions", "convert_file"]

METADATA_FOLDER = "OME"


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert: which scene (``None``: all), chunk sizes, compression, pyramid depth."""

    scene: int | None = None
    chunks: tuple[int, ...] | None = None
    compression: Compression = "zstd"
    max_levels: int = 8


@dataclass(frozen=True)
class ConversionResult:
    """What one conversion wrote."""

    source: Path
    output: Path
    format_name: str
    scenes: list[dict[str, Any]] = field(default_factory=list)
    pixel_bytes: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "format": self.format_name,
            "scenes": self.scenes,
            "pixel_bytes": self.pixel_bytes,
            "seconds": round(self.seconds, 3),
        }


def convert_file(
    source: Path, output: Path, options: ConvertOptions | None = None
) -> ConversionResult:
    """Convert ``source`` to a new OME-Zarr store at ``output`` (which must not exist)."""
    options = options or ConvertOptions()
    source, output = Path(source), Path(output)
    if output.exists():
        raise ConversionError(
            f"{output} exists already; choose a new output path or remove the old store first"
        )
    if not output.parent.is_dir():
        raise ConversionError(
            f"{output}: the folder {output.parent} does not exist; create it first"
        )
    started = time.perf_counter()
    reader = open_source(source)
    try:
        chosen = _chosen_scenes(reader, options.scene)
        tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex}.partial")
        try:
            summaries = _write_store(reader, chosen, tmp, options)
            if output.exists():
                raise ConversionError(
                    f"{output} appeared while converting {source}; remove it and convert again"
                )
            tmp.rename(output)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _write_error(exc, source, output) from exc
            raise
    finally:
        reader.close()
    return ConversionResult(
        source=source,
        output=output,
        format_name=reader.format_name,
        scenes=summaries,
        pixel_bytes=sum(s["pixel_bytes"] for s in summaries),
        seconds=time.perf_counter() - started,
    )


def _chosen_scenes(reader: SourceReader, scene: int | None) -> list[int]:
    count = len(reader.scenes)
    if scene is None:
        return list(range(count))
    if not 0 <= scene < count:
        raise ConversionError(
            f"{reader.path} has {count} scene(s) (0..{count - 1}); --scene {scene} is not one"
        )
    return [scene]


def _write_store(
    reader: SourceReader, scenes: list[int], tmp: Path, options: ConvertOptions
) -> list[dict[str, Any]]:
    import zarr

    if len(scenes) == 1:
        summaries = [_write_image(reader, scenes[0], tmp, options)]
    else:
        root = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
        root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
        summaries = [
            _write_image(reader, scene, tmp / str(i), options) for i, scene in enumerate(scenes)
        ]
        series = zarr.open_group(str(tmp / METADATA_FOLDER), mode="w-", zarr_format=3)
        series.attrs["ome"] = {"version": "0.5", "series": [str(i) for i in range(len(scenes))]}
    original = reader.original_metadata
    if original is not None:
        folder = tmp / METADATA_FOLDER
        folder.mkdir(exist_ok=True)
        (folder / f"METADATA.{original.suffix}").write_text(original.text, encoding="utf-8")
    return summaries


def _write_image(
    reader: SourceReader, scene_index: int, path: Path, options: ConvertOptions
) -> dict[str, Any]:
    scene = reader.scenes[scene_index]
    writer = ImageWriter(
        path,
        scene,
        chunks=options.chunks,
        compression=options.compression,
        max_levels=options.max_levels,
    )
    for t, c, zs, ys, xs in writer.blocks():
        planes = [reader.read(scene_index, t, c, z, ys, xs) for z in range(zs.start, zs.stop)]
        writer.write(t, c, zs, ys, xs, planes[0][None] if len(planes) == 1 else _stack(planes))
    original = reader.original_metadata
    attributes: dict[str, Any] = {
        "source": {
            "file": reader.path.name,
            "format": reader.format_name,
            "scene": scene_index,
        },
        "planes": [p.as_json() for p in scene.planes],
    }
    if scene.acquired:
        attributes["acquired"] = scene.acquired
    if original is not None:
        attributes["original_metadata"] = f"{METADATA_FOLDER}/METADATA.{original.suffix}"
    writer.finish(attributes)
    nbytes = 1
    for size in scene.shape:
        nbytes *= size
    return {
        "name": scene.name,
        "scene": scene_index,
        "shape": list(scene.shape),
        "dtype": str(scene.dtype),
        "levels": len(writer.shapes),
        "pixel_bytes": nbytes * scene.dtype.itemsize,
    }


def _stack(planes: list[Any]) -> Any:
    import numpy as np

    return np.stack(planes)


def _write_error(exc: OSError, source: Path, output: Path) -> ConversionError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConversionError(
            f"{output}: the disk is full ({exc.strerror}) while converting {source}; free space "
            f"on {output.parent} or choose an output on another disk. Nothing was left at {output}"
        )
    return ConversionError(
        f"{output}: cannot write while converting {source} ({exc}); check that the folder is "
        f"writable and has space. Nothing was left at {output}"
    )
