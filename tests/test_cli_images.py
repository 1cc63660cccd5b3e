"""`scopeflow segment` and `scopeflow restore`: TIFF round trips and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from scopeflow._cli_images import (  # noqa: PLC2701 (the CLI's own parsing helpers)
    parse_model_options,
    read_tiff,
)
from scopeflow.cli import app
from tasks.inference import psnr
from tasks.training import sim_pair, simulated_frame

pytest.importorskip("torch")
runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_restore_roundtrip_keeps_shape_units_and_pixel_size(tmp_path: Path) -> None:
    noisy, ref = sim_pair(10_011, 128)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(
        src,
        noisy.astype(np.uint16),
        resolution=(1e4 / 0.65, 1e4 / 0.65),
        resolutionunit="CENTIMETER",
    )
    code, out = _invoke("restore", src, dst, "--device", "cpu")
    assert code == 0, out
    restored = tifffile.imread(dst)
    assert restored.dtype == np.float32 and restored.shape == noisy.shape
    assert psnr(ref, restored) > psnr(ref, noisy) + 2  # measured +2.95 dB on this frame
    assert read_tiff(dst).pixel_size_um == pytest.approx(0.65, rel=1e-4)
    # exists -> refuses without --overwrite, names the flag
    code, out = _invoke("restore", src, dst)
    assert code == 2 and "--overwrite" in out
    code, out = _invoke(
        "restore",
        src,
        dst,
        "--overwrite",
        "--keep-dtype",
        "--model",
        "gaussian",
        "--model-option",
        "sigma=1.5",
    )
    assert code == 0, out
    assert tifffile.imread(dst).dtype == np.uint16


def test_restore_stack_plane_by_plane(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stack = rng.poisson(50.0, (3, 40, 48)).astype(np.uint16)
    stack[1] += 1000
    src, dst = tmp_path / "stack.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, stack, photometric="minisblack")
    code, out = _invoke("restore", src, dst, "--model", "gaussian", "--model-option", "sigma=2")
    assert code == 0, out
    result = tifffile.imread(dst)
    assert result.shape == stack.shape
    assert 1000 < result[1].mean() < 1100 and result[0].mean() < 100


def test_segment_roundtrip(tmp_path: Path) -> None:
    frame = simulated_frame(seed=5, size=192)
    src, dst = tmp_path / "nuclei.tif", tmp_path / "labels.tif"
    px = frame.pixel_size_um
    tifffile.imwrite(src, frame.image, resolution=(1e4 / px, 1e4 / px), resolutionunit="CENTIMETER")
    code, out = _invoke("segment", src, dst, "--model", "classical")
    assert code == 0, out
    labels = tifffile.imread(dst)
    assert labels.dtype == np.int32 and labels.shape == frame.image.shape
    n_true = int(frame.labels.max())
    assert n_true > 3 and 0.5 * n_true <= labels.max() <= 1.5 * n_true


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ("restore", "{d}/absent.tif", "{d}/o.tif"), "not found"),
        ("png", ("restore", "{d}/in.png", "{d}/o.tif"), "not a TIFF"),
        ("4d", ("restore", "{d}/in.tif", "{d}/o.tif"), "split time points"),
        ("2d", ("restore", "{d}/in.tif", "{d}/o.tif", "--model", "nope"), "unknown restoration"),
        ("2d", ("segment", "{d}/in.tif", "{d}/o.tif", "--model", "care"), "unknown model"),
        ("2d", ("restore", "{d}/in.tif", "{d}/o.tif", "--model-option", "sigma"), "key=value"),
        (
            "2d",
            (
                "restore",
                "{d}/in.tif",
                "{d}/o.tif",
                "--model",
                "gaussian",
                "--model-option",
                "bogus=1",
            ),
            "--model-option",
        ),
    ],
)
def test_bad_input_names_the_fix(
    tmp_path: Path, make: str | None, args: tuple[str, ...], message: str
) -> None:
    if make == "png":
        (tmp_path / "in.png").write_bytes(b"\x89PNG")
    elif make == "4d":
        tifffile.imwrite(
            tmp_path / "in.tif", np.zeros((2, 3, 8, 8), np.uint16), photometric="minisblack"
        )
    elif make == "2d":
        tifffile.imwrite(tmp_path / "in.tif", np.zeros((16, 16), np.uint16))
    code, out = _invoke(*(a.format(d=tmp_path) for a in args))
    assert code == 2, out
    assert message in out


def test_parse_model_options() -> None:
    assert parse_model_options(["sigma=1.5", "weights=/x/y.pt", "tile=256", "flag=true"]) == {
        "sigma": 1.5,
        "weights": "/x/y.pt",
        "tile": 256,
        "flag": True,
    }
