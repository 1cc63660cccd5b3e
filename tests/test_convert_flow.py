"""The convert-folder flow on a small folder: converted, skipped and failed rows, one artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.convert import ConvertFolderParams, convert_folder
from tests.conftest import shared_data, validate_store
from tests.test_convert_ndtiff import write_dataset


def test_convert_folder_reports_each_file(tmp_path: Path, prefect_harness: None) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    for name in ("DAPI_GFP.czi", "FOV7_HV110_P0500510000.ome.tiff"):
        shutil.copy(shared_data("czi", name), inbox / name)
    data = shared_data("czi", "WellD6_S1.czi").read_bytes()
    (inbox / "broken.czi").write_bytes(data[: len(data) // 3])
    (inbox / "notes.txt").write_text("not an image")
    ndtiff_folder = write_dataset(inbox)  # a Micro-Manager NDTiff dataset: one source
    params = ConvertFolderParams(input_folder=inbox, output_folder=outbox)

    summary = convert_folder(params)

    status = {Path(r["file"]).name: (r["status"], r["reason"]) for r in summary["rows"]}
    assert status["DAPI_GFP.czi"][0] == "converted"
    assert status["FOV7_HV110_P0500510000.ome.tiff"][0] == "converted"
    assert status["broken.czi"][0] == "failed" and "broken.czi" in status["broken.czi"][1]
    assert status["notes.txt"][0] == "skipped"
    assert status[ndtiff_folder.name] == ("converted", "NDTiff, 2 scene(s)")
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (3, 1, 1)
    assert sorted(p.name for p in outbox.iterdir()) == [
        "DAPI_GFP.ome.zarr",
        "FOV7_HV110_P0500510000.ome.zarr",
        f"{ndtiff_folder.name}.ome.zarr",
    ]
    validate_store(outbox / "DAPI_GFP.ome.zarr")

    again = convert_folder(params)
    assert (again["converted"], again["skipped"], again["failed"]) == (0, 4, 1)
    with pytest.raises(Exception, match="is not a folder"):
        convert_folder(ConvertFolderParams(input_folder=tmp_path / "nope", output_folder=outbox))
