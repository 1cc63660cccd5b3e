"""Vendor files to OME-Zarr: pixels and metadata against independent readers, validators, errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from scopeflow import ConversionError
from scopeflow.cli import app
from tasks.storage.convert import ConvertOptions, convert_file
from tests.conftest import shared_data, validate_store

REPO = Path(__file__).resolve().parents[1]
CZI_FILES = (
    "CellDivision_T3_Z5_CH2_X240_Y170.czi",
    "DAPI_GFP.czi",
    "FOV7_HV110_P0500510000.czi",
    "WellD6_S1.czi",
)
SMALL_CHUNKS = ConvertOptions(chunks=(64, 64))  # small images still get a pyramid


def validate_spec_schemas(store: Path) -> None:
    script = shared_data("ome_ngff_spec", "validate_store_with_spec_schemas.py")
    done = subprocess.run(
        [sys.executable, str(script), str(store), "--strict"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"spec schemas reject {store}:\n{done.stdout}{done.stderr}"
    assert "PASS" in done.stdout and "FAIL" not in done.stdout


def validate_bf2raw(store: Path) -> None:
    """A multi-scene store: yaozarrs and the spec schemas on the whole store; ome-zarr-models'
    CLI does not try its v0.5 bioformats2raw model, so that model is checked through its API and
    each image through the CLI."""
    from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw

    validate_spec_schemas(store)
    model = BioFormats2Raw.from_zarr(zarr.open_group(str(store), mode="r"))
    assert model.ome_attributes.bioformats2raw_layout == 3
    for image in sorted(p for p in store.iterdir() if p.name.isdigit()):
        validate_store(image)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "yaozarrs"), "validate", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def ome(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".zarr", ".partial")))


@pytest.fixture(scope="module")
def czi_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("czi")
    stores = {}
    for name in CZI_FILES:
        stores[name] = out / f"{name}.ome.zarr"
        convert_file(shared_data("czi", name), stores[name], SMALL_CHUNKS)
    return stores


@pytest.mark.parametrize("name", CZI_FILES)
def test_czi_pixels_identical_to_czifile_and_store_valid(
    czi_stores: dict[str, Path], name: str
) -> None:
    import czifile

    with czifile.CziFile(str(shared_data("czi", name))) as czi:
        reference = czi.asarray()
        axes = czi.axes
    sizes = dict(zip(axes, reference.shape, strict=True))
    squeezed = reference.squeeze(axis=tuple(i for i, a in enumerate(axes) if a not in "TCZYX"))
    kept = "".join(a for a in axes if a in "TCZYX")
    shape5 = tuple(sizes.get(a, 1) for a in "TCZYX")
    expected = squeezed.transpose([kept.index(a) for a in "TCZYX" if a in kept]).reshape(shape5)
    store = czi_stores[name]
    level0 = zarr.open_group(str(store), mode="r")["0"]
    assert level0.shape == shape5
    np.testing.assert_array_equal(level0[:], expected)
    validate_store(store)
    validate_spec_schemas(store)


def test_czi_physical_sizes_channels_and_pyramid(czi_stores: dict[str, Path]) -> None:
    store = czi_stores["CellDivision_T3_Z5_CH2_X240_Y170.czi"]
    attrs = ome(store)
    multiscale = attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "z", "y", "x"]
    assert [a.get("unit") for a in multiscale["axes"]] == [
        "second",
        None,
        "micrometer",
        "micrometer",
        "micrometer",
    ]
    scale0 = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    # CZI Scaling: X/Y 9.0576674152210312E-08 m, Z 3.2E-07 m; TimeStamps 360.4, 420.4, 480.4 s
    assert scale0[2:] == pytest.approx([0.32, 0.090576674152, 0.090576674152])
    assert scale0[0] == pytest.approx(59.9954, abs=1e-3)
    channels = attrs["ome"]["omero"]["channels"]
    assert [(c["label"], c["color"]) for c in channels] == [
        ("LED555", "FF7E00"),
        ("LED470", "00FF33"),
    ]
    group = zarr.open_group(str(store), mode="r")
    assert [group[d["path"]].shape[3:] for d in multiscale["datasets"]] == [
        (170, 240),
        (85, 120),
        (43, 60),
    ]
    full = group["0"][:].astype(np.float64)
    mean = full.reshape(3, 2, 5, 85, 2, 120, 2).mean(axis=(4, 6))
    np.testing.assert_array_equal(group["1"][:], np.floor(mean + 0.5).astype(np.uint16))
    assert (store / attrs["scopeflow"]["original_metadata"]).read_text().startswith("<")


def test_czi_plane_times_and_stage_positions_match_the_plane_table(
    czi_stores: dict[str, Path],
) -> None:
    table = shared_data("czi", "CellDivision_T3_Z5_CH2_X240_Y170_planetable.csv")
    planes = {
        (p["t"], p["c"], p["z"]): p
        for p in ome(czi_stores["CellDivision_T3_Z5_CH2_X240_Y170.czi"])["scopeflow"]["planes"]
    }
    assert len(planes) == 30
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert rows
    for row in rows:
        plane = planes[(int(row["T"]), int(row["C"]), int(row["Z"]))]
        assert plane["delta_t_s"] == pytest.approx(float(row["Time[s]"]), abs=1e-3)
        assert plane["position_x_um"] == pytest.approx(float(row["X[micron]"]))
        assert plane["position_y_um"] == pytest.approx(float(row["Y[micron]"]))
        assert plane["position_z_um"] == pytest.approx(float(row["Z[micron]"]))


def test_czi_without_scaling_has_no_units_and_a_named_scene(czi_stores: dict[str, Path]) -> None:
    fov = ome(czi_stores["FOV7_HV110_P0500510000.czi"])["ome"]["multiscales"][0]
    assert all("unit" not in a for a in fov["axes"])  # its Scaling is 0: unknown, not 0 µm
    well = ome(czi_stores["WellD6_S1.czi"])
    assert well["ome"]["multiscales"][0]["name"] == "D6"
    assert well["scopeflow"]["planes"][0]["position_x_um"] == pytest.approx(49500.0)


def test_czi_and_its_ome_tiff_twin_give_identical_pixels(
    czi_stores: dict[str, Path], tmp_path: Path
) -> None:
    twin = tmp_path / "twin.ome.zarr"
    result = convert_file(shared_data("czi", "FOV7_HV110_P0500510000.ome.tiff"), twin)
    assert result.format_name == "OME-TIFF"
    from_czi = zarr.open_group(str(czi_stores["FOV7_HV110_P0500510000.czi"]), mode="r")["0"][:]
    from_tiff = zarr.open_group(str(twin), mode="r")["0"][:]
    np.testing.assert_array_equal(from_tiff, from_czi)
    assert (twin / "OME" / "METADATA.ome.xml").read_text().count("<Pixels") == 1
    validate_store(twin)


def write_micromanager_stack(folder: Path) -> Path:
    """A two-position Micro-Manager OME-TIFF with the real MMStack.ome.xml; pixel value of page
    ``i`` of position ``k`` is ``100 * k + i``, so placement can be checked against its TiffData."""
    xml = shared_data("ome_types_ome_xml", "MMStack.ome.xml").read_text(encoding="utf-8")
    names = sorted(set(re.findall(r'FileName="([^"]+)"', xml)))
    for k, name in enumerate(names):
        with tifffile.TiffWriter(folder / name) as tif:
            for i in range(30):
                tif.write(
                    np.full((256, 256), 100 * k + i, np.uint16),
                    description=xml.encode() if (i == 0 and k == 0) else None,
                    metadata=None,
                    contiguous=False,
                )
    return folder / names[0]


def test_micromanager_ome_tiff_two_positions_as_bioformats2raw(tmp_path: Path) -> None:
    source = write_micromanager_stack(tmp_path)
    store = tmp_path / "mm.ome.zarr"
    result = convert_file(source, store)
    assert [s["shape"] for s in result.scenes] == [[2, 3, 5, 256, 256]] * 2
    validate_bf2raw(store)
    with tifffile.TiffFile(source) as tif:
        expected = [s.asarray() for s in tif.series]  # TZCYX
    for k in range(2):
        image = store / str(k)
        np.testing.assert_array_equal(
            zarr.open_group(str(image), mode="r")["0"][:],
            np.moveaxis(expected[k], [0, 2, 1], [0, 1, 2]),
        )
        attrs = ome(image)
        multiscale = attrs["ome"]["multiscales"][0]
        scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
        assert scale == pytest.approx([0.001, 1.0, 1.75, 2.0, 2.0])  # 1 ms, 1.75 µm, 2 µm
        assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == ["Cy5", "DAPI", "FITC"]
        assert attrs["scopeflow"]["planes"]
    assert json.loads((store / "OME" / "zarr.json").read_text())["attributes"]["ome"]["series"] == [
        "0",
        "1",
    ]
    one = tmp_path / "one.ome.zarr"
    convert_file(source, one, ConvertOptions(scene=1))
    assert ome(one)["ome"]["multiscales"][0]["name"].endswith("Pos001_000")


def test_mrc_volume_pixels_and_voxel_size(tmp_path: Path) -> None:
    volume = np.random.default_rng(0).normal(size=(6, 100, 90)).astype(np.float32)
    source = tmp_path / "tomo.mrc"
    with mrcfile.new(str(source)) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = (2.5, 2.5, 3.0)  # angstrom
    store = tmp_path / "tomo.ome.zarr"
    convert_file(source, store, SMALL_CHUNKS)
    with mrcfile.open(str(source)) as mrc:
        np.testing.assert_array_equal(zarr.open_group(str(store), mode="r")["0"][0, 0], mrc.data)
    multiscale = ome(store)["ome"]["multiscales"][0]
    assert multiscale["axes"][4]["unit"] == "nanometer"
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[2:] == pytest.approx([0.3, 0.25, 0.25])
    header = json.loads((store / "OME" / "METADATA.mrc.json").read_text())
    assert header["nx"] == 90 and header["nz"] == 6
    validate_store(store)
    validate_spec_schemas(store)


def test_sem_tiffs_carry_the_vendors_pixel_size(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 65535, (300, 400), dtype=np.uint16)
    zeiss = tmp_path / "zeiss_sem.tif"
    cz_sem = "\r\n".join(["", "AP_IMAGE_PIXEL_SIZE", "Image Pixel Size = 4.467 nm", ""])
    tifffile.imwrite(zeiss, image, extratags=[(34118, "s", 0, cz_sem, True)])
    fei = tmp_path / "helios.tif"
    ini = "[User]\r\nDate=01/02/2024\r\n[Scan]\r\nPixelWidth=1.5e-09\r\nPixelHeight=1.5e-09\r\n"
    tifffile.imwrite(fei, image, extratags=[(34682, "s", 0, ini, True)])
    for source, expected_um in ((zeiss, 4.467e-3), (fei, 1.5e-3)):
        with tifffile.TiffFile(source) as tif:  # tifffile's own parse of the vendor tag
            assert tif.is_sem or tif.is_fei
        store = tmp_path / f"{source.stem}.ome.zarr"
        result = convert_file(source, store)
        assert result.format_name in ("ZEISS SEM TIFF", "Thermo Fisher/FEI TIFF")
        scale = ome(store)["ome"]["multiscales"][0]["datasets"][0]
        assert scale["coordinateTransformations"][0]["scale"][3:] == pytest.approx(
            [expected_um] * 2
        )
        np.testing.assert_array_equal(zarr.open_group(str(store), mode="r")["0"][0, 0, 0], image)
        assert (store / "OME" / "METADATA.tiff.json").is_file()
        validate_store(store)


def test_large_file_is_streamed_chunk_by_chunk(tmp_path: Path) -> None:
    """A 64 MB volume converts with a small fraction of its size held in memory at once."""
    source = tmp_path / "big.mrc"
    with mrcfile.new_mmap(str(source), shape=(16, 1024, 2048), mrc_mode=6) as mrc:
        for z in range(16):
            mrc.data[z] = (np.arange(2048, dtype=np.uint16) + z)[None, :]
    tracemalloc.start()
    try:
        convert_file(source, tmp_path / "big.ome.zarr", ConvertOptions(chunks=(256, 512)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 64 MiB file"
    level1 = zarr.open_group(str(tmp_path / "big.ome.zarr"), mode="r")["1"]
    assert level1.shape == (1, 1, 16, 512, 1024)
    assert level1[0, 0, 3, 0, 10] == 24  # mean of 2x2 pixels 23, 24, 23, 24, rounded half up


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cut", "problem"),
    [
        ("CellDivision_T3_Z5_CH2_X240_Y170.czi", 0.5, "truncated or corrupt"),
        ("CellDivision_T3_Z5_CH2_X240_Y170.czi", 0.01, "truncated or corrupt"),
        ("FOV7_HV110_P0500510000.ome.tiff", 0.5, "truncated or corrupt"),
    ],
)
def test_truncated_file_names_the_file_and_leaves_nothing(
    tmp_path: Path, name: str, cut: float, problem: str
) -> None:
    data = shared_data("czi", name).read_bytes()
    source = tmp_path / name
    source.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ConversionError, match=problem) as info:
        convert_file(source, tmp_path / "out.ome.zarr")
    assert str(source) in str(info.value)
    assert leftovers(tmp_path) == []


def test_corrupt_and_unsupported_inputs(tmp_path: Path) -> None:
    garbage = tmp_path / "noise.czi"
    garbage.write_bytes(np.random.default_rng(2).bytes(4096))
    with pytest.raises(ConversionError, match=r"noise\.czi: not a readable CZI"):
        convert_file(garbage, tmp_path / "a.ome.zarr")
    other = tmp_path / "scan.vsi"
    other.write_bytes(b"x")
    with pytest.raises(ConversionError, match=r"scan\.vsi: unsupported format '\.vsi'.*OME-TIFF"):
        convert_file(other, tmp_path / "b.ome.zarr")
    with pytest.raises(ConversionError, match="does not exist"):
        convert_file(tmp_path / "missing.czi", tmp_path / "c.ome.zarr")
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(importlib.util.find_spec("bioio") is not None, reason="bioio is installed here")
def test_nd2_without_bioio_names_the_package_to_install(tmp_path: Path) -> None:
    source = tmp_path / "plate.nd2"
    source.write_bytes(b"\xda\xce\xbe\x0a" + bytes(60))
    with pytest.raises(ConversionError, match="pip install bioio bioio-nd2"):
        convert_file(source, tmp_path / "plate.ome.zarr")


def test_existing_output_is_refused_and_kept(tmp_path: Path) -> None:
    output = tmp_path / "kept.ome.zarr"
    output.mkdir()
    (output / "mine.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="exists already"):
        convert_file(shared_data("czi", "DAPI_GFP.czi"), output)
    assert (output / "mine.txt").read_text() == "keep me"


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so that writing really fails with ENOSPC (needs mount rights)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", f"scopeflow-{uuid.uuid4().hex[:6]}", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_names_the_output_and_leaves_nothing(tiny_disk: Path) -> None:
    source = shared_data("czi", "CellDivision_T3_Z5_CH2_X240_Y170.czi")  # 2.4 MB of pixels
    output = tiny_disk / "cells.ome.zarr"
    with pytest.raises(ConversionError, match="disk is full") as info:
        convert_file(source, output, ConvertOptions(compression="none"))
    assert str(output) in str(info.value) and "free space" in str(info.value)
    assert list(tiny_disk.iterdir()) == []


# -- command line ------------------------------------------------------------------------------


def test_cli_converts_and_reports_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    source = shared_data("czi", "WellD6_S1.czi")
    output = tmp_path / "well.ome.zarr"
    done = runner.invoke(app, ["convert", str(source), str(output), "--chunks", "128,128"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["scenes"][0]["levels"] == 4 and report["format"] == "CZI"
    validate_store(output)
    again = runner.invoke(app, ["convert", str(source), str(output)])
    assert again.exit_code == 2 and "error:" in again.stderr and "exists already" in again.stderr
    bad = runner.invoke(app, ["convert", str(source), str(tmp_path / "x.ome.zarr"), "--scene", "3"])
    assert bad.exit_code == 2 and "has 1 scene(s)" in bad.stderr
    chunks = runner.invoke(
        app, ["convert", str(source), str(tmp_path / "y.ome.zarr"), "--chunks", "0,5"]
    )
    assert chunks.exit_code == 2 and "--chunks" in chunks.stderr
    assert leftovers(tmp_path) == ["well.ome.zarr"]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_streamed_whole_chunks_read_back_and_window_is_the_exact_range(
    tmp_path: Path, compression: str
) -> None:
    from tasks.storage.convert import ChannelInfo, ImageWriter, SceneInfo

    rng = np.random.default_rng(3)
    frames = rng.integers(100, 4000, (3, 1, 1, 512, 384), dtype=np.uint16)
    frames[1, 0, 0, 511, 383] = 7  # extremes in the last bytes of a frame: the last slab
    frames[2, 0, 0, 511, 382] = 65000
    scene = SceneInfo(
        name="stream",
        shape=frames.shape,
        dtype=np.dtype(np.uint16),
        channels=(ChannelInfo("camera"),),
    )
    store = tmp_path / "s.ome.zarr"
    writer = ImageWriter(store, scene, compression=compression, max_levels=2, chunks=(512, 384))
    for t in range(3):
        writer.write(t, 0, slice(0, 1), slice(0, 512), slice(0, 384), frames[t, 0])
    writer.finish()
    np.testing.assert_array_equal(zarr.open_array(str(store / "0"), mode="r")[:], frames)
    window = zarr.open_group(str(store), mode="r").attrs["ome"]["omero"]["channels"][0]["window"]
    assert (window["min"], window["max"]) == (7.0, 65000.0)
    validate_store(store)


def test_a_reader_whose_package_is_missing_names_the_extra(tmp_path: Path) -> None:
    """A user who installed scopeflow without the `convert` extra gets the pip command."""
    import subprocess
    import sys

    import mrcfile

    source = tmp_path / "volume.mrc"
    with mrcfile.new(source) as mrc:
        mrc.set_data(np.zeros((2, 8, 8), np.float32))
    script = (
        "import sys; sys.modules['mrcfile'] = None\n"
        "from scopeflow.cli import app\n"
        f'app(["convert", {str(source)!r}, {str(tmp_path / "out.ome.zarr")!r}])\n'
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "pip install 'scopeflow[convert]'" in done.stderr and "mrcfile" in done.stderr
    assert not (tmp_path / "out.ome.zarr").exists()
