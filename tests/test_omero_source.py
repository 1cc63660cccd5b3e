"""What is read from OME-Zarr for OMERO, and the key-value pairs attached: no server needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scopeflow import OmeroRejected
from tasks.storage import write_zstack
from tasks.storage.omero import RegistrationRequest, acquisition_pairs, open_image_sources


def test_planes_come_z_then_c_then_t(tmp_path: Path) -> None:
    import zarr

    data = np.arange(2 * 3 * 4 * 5 * 6, dtype="uint16").reshape(2, 3, 4, 5, 6)  # t c z y x
    store = tmp_path / "tczyx.ome.zarr"
    group = zarr.open_group(store, mode="w", zarr_format=3)
    axes = [
        {"name": a, "type": t}
        for a, t in zip("tczyx", ["time", "channel", "space", "space", "space"], strict=True)
    ]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": axes,
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 1, 1]}],
                    }
                ],
            }
        ],
    }
    group.create_array("0", data=data)
    [source] = open_image_sources(store)
    assert (source.size("t"), source.size("c"), source.size("z")) == (2, 3, 4)
    planes = list(source.planes())
    expected = [data[t, c, z] for z in range(4) for c in range(3) for t in range(2)]
    assert len(planes) == source.plane_count == 24
    assert all(np.array_equal(p, e) for p, e in zip(planes, expected, strict=True))


def test_zstack_metadata_and_a_folder_of_stores(tmp_path: Path) -> None:
    for i in range(2):
        write_zstack(
            tmp_path / f"s{i}.ome.zarr",
            np.zeros((3, 8, 8), "uint8"),
            pixel_size_um=0.2,
            z_step_um=1.5,
            channel="GFP",
        )
    (tmp_path / "frames.jsonl").write_text("")
    sources = open_image_sources(tmp_path)
    assert [s.path.name for s in sources] == ["s0.ome.zarr", "s1.ome.zarr"]
    assert sources[0].channel_names == ("GFP",)
    assert sources[0].pixel_size_um == {"z": 1.5, "y": 0.2, "x": 0.2}


def test_int64_pixels_are_rejected_with_the_fix(tmp_path: Path) -> None:
    store = write_zstack(tmp_path / "i.ome.zarr", np.zeros((4, 4), "int64"), pixel_size_um=1)
    with pytest.raises(OmeroRejected, match=r"pixel type int64 has no OMERO equivalent"):
        open_image_sources(store)


def test_a_plain_folder_is_rejected_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OmeroRejected, match=r"neither an OME-Zarr image nor a folder"):
        open_image_sources(tmp_path)


def test_metadata_becomes_flat_text_pairs_and_the_key_is_stable() -> None:
    pairs = acquisition_pairs({"objective": "20x", "stage": {"x": 1.5, "y": None}, "n": [1, 2]})
    assert pairs == [["objective", "20x"], ["stage.x", "1.5"], ["stage.y", "null"], ["n", "[1, 2]"]]
    a = RegistrationRequest(path=Path("/d/a.ome.zarr"), project="p", dataset="d", run_id="r")
    b = RegistrationRequest.model_validate(json.loads(a.model_dump_json()))
    assert a.key == b.key and len(a.key) == 32
    assert a.key != RegistrationRequest(path=Path("/d/a.ome.zarr"), project="p", dataset="e").key
