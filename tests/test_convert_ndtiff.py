"""NDTiff datasets to OME-Zarr: datasets written by ndtiff's own writer, read back by ndtiff.

The dataset: 2 positions x 2 time points x 2 channels x 3 z of random 48x64 uint16 images, with
the summary and per-image metadata keys Micro-Manager 2.0's acquisition engine writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from scopeflow import ConversionError
from scopeflow.cli import app
from tasks.storage.convert import ConvertOptions, convert_file
from tests.test_convert import leftovers, ome, validate_bf2raw

ndtiff = pytest.importorskip("ndtiff", reason="pip install -e '.[convert]' installs ndtiff")

CHANNELS = ("DAPI", "mCherry")
POSITIONS = (("Pos-A", 1250.0, -310.5), ("Pos-B", 2750.25, 480.0))
T_N, Z_N, HEIGHT, WIDTH = 2, 3, 48, 64
PIXEL_UM, Z_STEP_UM, INTERVAL_MS = 0.325, 1.5, 2000.0
SUMMARY = {
    "PixelSize_um": PIXEL_UM,
    "ChNames": list(CHANNELS),
    "StartTime": "2024-05-01 10:11:12.345 +0200",
    "Prefix": "cells",
}


def elapsed_ms(t: int, c: int, z: int) -> float:
    return t * INTERVAL_MS + c * 40.0 + z * 10.0


def write_dataset(root: Path) -> Path:
    """Write the dataset with ndtiff's writer; return its folder."""
    rng = np.random.default_rng(7)
    dataset = ndtiff.NDTiffDataset(str(root), name="cells", writable=True)
    dataset.initialize(SUMMARY)
    for p, (label, x_um, y_um) in enumerate(POSITIONS):
        for t in range(T_N):
            for z in range(Z_N):
                for c, channel in enumerate(CHANNELS):
                    image = rng.integers(0, 65535, (HEIGHT, WIDTH), dtype=np.uint16)
                    metadata = {
                        "Channel": channel,
                        "PositionName": label,
                        "ElapsedTime-ms": elapsed_ms(t, c, z),
                        "XPositionUm": x_um,
                        "YPositionUm": y_um,
                        "ZPositionUm": 20.0 + z * Z_STEP_UM,
                        "PixelSizeUm": PIXEL_UM,
                    }
                    coords = {"position": p, "time": t, "z": z, "channel": channel}
                    dataset.put_image(coords, image, metadata)
    dataset.finish()
    path = Path(dataset.path)
    dataset.close()
    assert (path / "NDTiff.index").is_file() and list(path.glob("cells_NDTiffStack*.tif"))
    return path


def reference(folder: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Every position as (t, c, z, y, x), read image by image with ndtiff; and the summary."""
    dataset = ndtiff.Dataset(str(folder))
    try:
        stacks = [
            np.stack(
                [
                    np.stack(
                        [
                            np.stack(
                                [
                                    dataset.read_image(position=p, time=t, channel=ch, z=z)
                                    for z in range(Z_N)
                                ]
                            )
                            for ch in CHANNELS
                        ]
                    )
                    for t in range(T_N)
                ]
            )
            for p in range(len(POSITIONS))
        ]
        return stacks, dict(dataset.summary_metadata)
    finally:
        dataset.close()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ndtiff")
    folder = write_dataset(root / "acquisitions")
    store = root / "cli.ome.zarr"
    done = CliRunner().invoke(app, ["convert", str(folder), str(store), "--chunks", "32,32"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)  # ndtiff's progress prints must not reach stdout
    return {"root": root, "folder": folder, "store": store, "report": report}


def test_pixels_identical_to_ndtiff_and_stores_valid(converted: dict[str, Any]) -> None:
    report, store = converted["report"], converted["store"]
    assert report["format"] == "NDTiff"
    assert [s["shape"] for s in report["scenes"]] == [[T_N, 2, Z_N, HEIGHT, WIDTH]] * 2
    assert [s["levels"] for s in report["scenes"]] == [2, 2]
    expected, _ = reference(converted["folder"])
    for p in range(len(POSITIONS)):
        group = zarr.open_group(str(store / str(p)), mode="r")
        assert group["0"].dtype == np.uint16
        np.testing.assert_array_equal(group["0"][:], expected[p])
        assert group["1"].shape == (T_N, 2, Z_N, HEIGHT // 2, WIDTH // 2)
    assert not np.array_equal(expected[0], expected[1])  # positions are not mixed up
    validate_bf2raw(store)


def test_axes_physical_sizes_channels_and_names(converted: dict[str, Any]) -> None:
    store = converted["store"]
    for p, (label, _, _) in enumerate(POSITIONS):
        attrs = ome(store / str(p))
        multiscale = attrs["ome"]["multiscales"][0]
        assert multiscale["name"] == label
        assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "z", "y", "x"]
        assert [a.get("unit") for a in multiscale["axes"]] == [
            "second",
            None,
            "micrometer",
            "micrometer",
            "micrometer",
        ]
        scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
        assert scale == pytest.approx([INTERVAL_MS / 1e3, 1.0, Z_STEP_UM, PIXEL_UM, PIXEL_UM])
        scale1 = multiscale["datasets"][1]["coordinateTransformations"][0]["scale"]
        assert scale1[3:] == pytest.approx([2 * PIXEL_UM, 2 * PIXEL_UM])
        assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == list(CHANNELS)
        assert attrs["scopeflow"]["source"] == {
            "file": converted["folder"].name,
            "format": "NDTiff",
            "scene": p,
        }
        assert attrs["scopeflow"]["acquired"] == "2024-05-01T10:11:12.345000+02:00"


def test_plane_times_and_stage_positions_recorded(converted: dict[str, Any]) -> None:
    for p, (_, x_um, y_um) in enumerate(POSITIONS):
        planes = ome(converted["store"] / str(p))["scopeflow"]["planes"]
        assert len(planes) == T_N * 2 * Z_N
        for plane in planes:
            t, c, z = plane["t"], plane["c"], plane["z"]
            assert plane["delta_t_s"] == pytest.approx(elapsed_ms(t, c, z) / 1e3)
            assert plane["position_x_um"] == pytest.approx(x_um)
            assert plane["position_y_um"] == pytest.approx(y_um)
            assert plane["position_z_um"] == pytest.approx(20.0 + z * Z_STEP_UM)


def test_summary_metadata_kept_beside_the_store(converted: dict[str, Any]) -> None:
    store = converted["store"]
    _, summary = reference(converted["folder"])
    kept = json.loads((store / "OME" / "METADATA.ndtiff.json").read_text(encoding="utf-8"))
    assert kept == summary == SUMMARY
    assert ome(store / "0")["scopeflow"]["original_metadata"] == "OME/METADATA.ndtiff.json"


def test_index_file_path_and_one_position_through_convert_file(
    converted: dict[str, Any], tmp_path: Path
) -> None:
    index = converted["folder"] / "NDTiff.index"
    store = tmp_path / "one.ome.zarr"
    result = convert_file(index, store, ConvertOptions(scene=1, chunks=(32, 32)))
    assert result.format_name == "NDTiff" and result.source == index
    assert [s["scene"] for s in result.scenes] == [1]
    expected, _ = reference(converted["folder"])
    np.testing.assert_array_equal(zarr.open_group(str(store), mode="r")["0"][:], expected[1])
    assert ome(store)["ome"]["multiscales"][0]["name"] == POSITIONS[1][0]


# -- bad input ---------------------------------------------------------------------------------


def broken_copy(converted: dict[str, Any], tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(converted["folder"], copy)
    return copy


def convert_fails(source: Path, tmp_path: Path, match: str) -> str:
    with pytest.raises(ConversionError, match=match) as info:
        convert_file(source, tmp_path / "out.ome.zarr")
    assert leftovers(tmp_path) == []
    return str(info.value)


def test_truncated_index_names_the_index_and_leaves_nothing(
    converted: dict[str, Any], tmp_path: Path
) -> None:
    folder = broken_copy(converted, tmp_path)
    index = folder / "NDTiff.index"
    data = index.read_bytes()
    index.write_bytes(data[: len(data) // 2 + 7])  # cut inside an entry
    message = convert_fails(folder, tmp_path, "index is truncated or corrupt")
    assert str(index) in message and "copy the dataset folder again" in message


def test_index_cut_between_entries_reports_missing_images(
    converted: dict[str, Any], tmp_path: Path
) -> None:
    folder = broken_copy(converted, tmp_path)
    index = folder / "NDTiff.index"
    from ndtiff.ndtiff_index import NDTiffIndexEntry

    data = index.read_bytes()
    end, position = 0, 0
    for _ in range(19):  # keep 19 whole entries: position 1's second time point is cut short
        position, _, _ = NDTiffIndexEntry.unpack_single_index_entry(data, position)
        end = position
    index.write_bytes(data[:end])
    message = convert_fails(folder, tmp_path, r"5 of 24 images .* are missing")
    assert str(index) in message


def test_missing_stack_file_names_it_and_leaves_nothing(
    converted: dict[str, Any], tmp_path: Path
) -> None:
    folder = broken_copy(converted, tmp_path)
    stack = next(folder.glob("*_NDTiffStack*.tif"))
    stack.unlink()
    message = convert_fails(folder, tmp_path, "this stack file, listed in .*, is missing")
    assert message.startswith(str(stack))


def test_truncated_stack_file_names_it_and_leaves_nothing(
    converted: dict[str, Any], tmp_path: Path
) -> None:
    folder = broken_copy(converted, tmp_path)
    stack = next(folder.glob("*_NDTiffStack*.tif"))
    data = stack.read_bytes()
    stack.write_bytes(data[: int(len(data) * 0.6)])
    message = convert_fails(folder, tmp_path, "the file is truncated")
    assert str(stack) in message


def test_folder_without_index_and_cli_error(converted: dict[str, Any], tmp_path: Path) -> None:
    folder = broken_copy(converted, tmp_path)
    (folder / "NDTiff.index").unlink()
    convert_fails(folder, tmp_path, r"is a folder, not a file.*NDTiff dataset folder")
    shutil.rmtree(folder)
    folder = broken_copy(converted, tmp_path)
    (folder / "NDTiff.index").write_bytes(b'\x05\x00\x00\x00{"z":')
    done = CliRunner().invoke(app, ["convert", str(folder), str(tmp_path / "cli.ome.zarr")])
    assert done.exit_code == 2 and "NDTiff.index" in done.stderr
    assert leftovers(tmp_path) == []
