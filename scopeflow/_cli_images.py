"""Single-image commands: `scopeflow segment IN OUT` and `scopeflow restore IN OUT`.

They read a TIFF (one 2D image, or a stack of planes), run a registered model through the same
plane-by-plane code the flows use (``tasks.inference._apply``), and write a TIFF that keeps the
input's pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ._cli_fail import fail as _fail
from ._errors import ConfigurationError, ScopeflowError

__all__ = ["TiffImage", "parse_model_options", "read_tiff", "register", "write_tiff"]

_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class TiffImage:
    data: np.ndarray  # (rows, cols) or (planes, rows, cols)
    pixel_size_um: float | None


def parse_model_options(items: list[str]) -> dict[str, Any]:
    """``["sigma=1.5", "weights=/x.pt"]`` -> {"sigma": 1.5, "weights": "/x.pt"} (YAML scalars)."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"--model-option {item!r} is not key=value; write e.g. --model-option sigma=1.5"
            )
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        options[key.strip()] = parsed if isinstance(parsed, (int, float, bool, str)) else value
    return options


def read_tiff(path: Path) -> TiffImage:
    """The image and its pixel size (µm, from ImageJ/TIFF resolution tags when present)."""
    import tifffile

    if not path.is_file():
        raise ConfigurationError(f"input file not found: {path}; pass an existing TIFF file")
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            px = _pixel_size_um(tif)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise ConfigurationError(
            f"cannot read {path} as a TIFF ({exc}); convert it to .tif first (e.g. with "
            "`scopeflow convert` or Fiji 'Save As > Tiff')"
        ) from exc
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4:
        raise ConfigurationError(
            f"{path} looks like an RGB image (shape {data.shape}); save one grey channel as its "
            "own TIFF and pass that"
        )
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim not in (2, 3):
        raise ConfigurationError(
            f"{path} has shape {data.shape}: expected one 2D image or a stack of 2D planes; "
            "split time points / channels into separate TIFFs (e.g. Fiji 'Stack to Images')"
        )
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ConfigurationError(f"{path} holds {data.dtype} pixels; save it as integer or float")
    return TiffImage(data, px)


def _pixel_size_um(tif: Any) -> float | None:
    ij = tif.imagej_metadata or {}
    page = tif.pages[0]
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num:
        return None
    per_unit = den / num  # units per pixel
    unit = page.tags.get("ResolutionUnit")
    code = int(unit.value) if unit is not None else 1
    if ij.get("unit") in ("micron", "um", "µm", "\\u00B5m"):
        return per_unit
    if code == 3:  # centimetre
        return per_unit * 1e4
    if code == 2:  # inch
        return per_unit * 25400.0
    return None  # no unit: a bare pixel count says nothing about µm


def write_tiff(path: Path, data: np.ndarray, pixel_size_um: float | None) -> None:
    import tifffile

    kwargs: dict[str, Any] = {}
    if pixel_size_um is not None and math.isfinite(pixel_size_um) and pixel_size_um > 0:
        kwargs = {"resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um)}
        kwargs["resolutionunit"] = "CENTIMETER"
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, photometric="minisblack", **kwargs)


def _check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    if src.suffix.lower() not in _TIFF_SUFFIXES:
        raise ConfigurationError(
            f"input {src} is not a TIFF (.tif/.tiff); convert it first (e.g. `scopeflow "
            "convert` or Fiji 'Save As > Tiff')"
        )
    if dst.suffix.lower() not in _TIFF_SUFFIXES:
        raise ConfigurationError(f"output {dst} must end in .tif or .tiff")
    if dst.exists() and not overwrite:
        raise ConfigurationError(f"output {dst} exists; pass --overwrite or choose another path")
    if dst.resolve() == src.resolve():
        raise ConfigurationError(f"output {dst} is the input; choose another path")


def _options(items: list[str], device: str | None) -> dict[str, Any]:
    options = parse_model_options(items)
    if device is not None:
        options["device"] = device
    return options


def _run(
    kind: str,
    src: Path,
    dst: Path,
    model_name: str,
    items: list[str],
    device: str | None,
    pixel_size_um: float | None,
    overwrite: bool,
    keep_dtype: bool = False,
) -> None:
    from tasks.inference import load_model, load_restoration_model, restore_planes, segment_planes

    try:
        _check_paths(src, dst, overwrite)
        image = read_tiff(src)
        options = _options(items, device)
        px = pixel_size_um if pixel_size_um is not None else image.pixel_size_um
        try:
            if kind == "segment":
                result = segment_planes(
                    load_model(model_name, **options), image.data, pixel_size_um=px
                )
            else:
                result = restore_planes(
                    load_restoration_model(model_name, **options), image.data, pixel_size_um=px
                )
        except (TypeError, ValueError) as exc:  # bad option or an image the model refuses
            raise ConfigurationError(
                f"{kind} with model {model_name!r} failed: {exc}; check --model-option names "
                f"and values (see the model's docs) and the input image"
            ) from exc
        if keep_dtype and np.issubdtype(image.data.dtype, np.integer):
            info = np.iinfo(image.data.dtype)
            result = np.clip(np.rint(result), info.min, info.max).astype(image.data.dtype)
        write_tiff(dst, result, image.pixel_size_um)
    except ScopeflowError as exc:
        _fail(exc)
        return
    planes = 1 if result.ndim == 2 else result.shape[0]
    extra = f", {int(result.max())} objects max per plane" if kind == "segment" else ""
    typer.echo(f"wrote {dst} ({planes} plane(s), {result.dtype}{extra})")


ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model-option", help="Model option key=value (repeatable), e.g. weights=/my.pt."
    ),
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: the model's).")]
PixelSize = Annotated[
    float | None,
    typer.Option(help="Pixel size in µm (default: from the TIFF's resolution tags)."),
]
Overwrite = Annotated[bool, typer.Option(help="Replace OUT when it exists.")]


def register(app: typer.Typer) -> None:
    """Add the `segment` and `restore` commands to ``app``."""

    @app.command("segment")
    def segment(
        src: Annotated[Path, typer.Argument(help="Input TIFF: a 2D image or a stack of planes.")],
        dst: Annotated[Path, typer.Argument(help="Output TIFF of int32 instance labels.")],
        model: Annotated[str, typer.Option(help="Segmentation model (registry name).")] = "unet",
        model_option: ModelOption = None,
        device: Device = None,
        pixel_size: PixelSize = None,
        overwrite: Overwrite = False,
    ) -> None:
        """Segment nuclei in one TIFF (each plane of a stack on its own) into a label TIFF."""
        _run("segment", src, dst, model, model_option or [], device, pixel_size, overwrite)

    @app.command("restore")
    def restore(
        src: Annotated[Path, typer.Argument(help="Input TIFF: a 2D image or a stack of planes.")],
        dst: Annotated[Path, typer.Argument(help="Output TIFF (float32, input units).")],
        model: Annotated[
            str,
            typer.Option(
                help="Restoration model: care, n2v, gaussian, or bioimageio:/path/package.zip."
            ),
        ] = "care",
        model_option: ModelOption = None,
        device: Device = None,
        pixel_size: PixelSize = None,
        overwrite: Overwrite = False,
        keep_dtype: Annotated[
            bool, typer.Option(help="Round and clip back to the input's integer dtype.")
        ] = False,
    ) -> None:
        """Denoise one TIFF (each plane of a stack on its own) with a restoration model."""
        _run(
            "restore",
            src,
            dst,
            model,
            model_option or [],
            device,
            pixel_size,
            overwrite,
            keep_dtype,
        )
