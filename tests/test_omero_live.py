"""Against a real OMERO server: runs only when SCOPEFLOW_OMERO_HOST is set (README, "OMERO").

Creates a project named ``scopeflow-live-<random>`` and deletes it (with its datasets and
images) at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from scopeflow import OmeroSettings
from tasks.storage import write_zstack
from tasks.storage.omero import (
    NS_ACQUISITION,
    NS_REGISTRATION,
    OmeroRegistrar,
    OmeroSpool,
    RegistrationRequest,
    connect,
)
from tests.test_omero_support import require_omero_py

pytestmark = [
    pytest.mark.omero_live,
    pytest.mark.skipif(
        not os.environ.get("SCOPEFLOW_OMERO_HOST"),
        reason="no OMERO server: set SCOPEFLOW_OMERO_HOST, _USERNAME, _PASSWORD (README, OMERO)",
    ),
]


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[tuple[OmeroSettings, str]]:
    require_omero_py()
    settings = OmeroSettings(spill_dir=tmp_path / "spool")  # environment only, no TOML
    project = f"scopeflow-live-{uuid.uuid4().hex[:8]}"
    yield settings, project
    gateway = connect(settings)
    try:
        ids = [p.getId() for p in gateway.getObjects("Project", attributes={"name": project})]
        if ids:
            gateway.deleteObjects("Project", ids, deleteAnns=True, deleteChildren=True, wait=True)
    finally:
        gateway.close()


def test_register_annotate_and_reuse(live, tmp_path: Path) -> None:
    settings, project = live
    stack = np.arange(3 * 32 * 24, dtype="uint16").reshape(3, 32, 24)
    store = write_zstack(tmp_path / "z.ome.zarr", stack, pixel_size_um=0.25, channel="DAPI")
    request = RegistrationRequest(
        path=store,
        project=project,
        dataset="d1",
        run_id="live-run",
        metadata={"objective": "20x", "stage": {"x_um": 10.5}},
    )
    with OmeroRegistrar(settings) as registrar:
        first = registrar.register(request)
        again = registrar.register(request)
    assert len(first.image_ids) == 1 and not first.reused
    assert again.reused and again.image_ids == first.image_ids
    gateway = connect(settings)
    try:
        image = gateway.getObject("Image", first.image_ids[0])
        assert (image.getSizeZ(), image.getSizeY(), image.getSizeX()) == (3, 32, 24)
        assert image.getParent().getId() == first.dataset_id
        assert image.getParent().getParent().getId() == first.project_id
        plane = image.getPrimaryPixels().getPlane(2, 0, 0)
        assert np.array_equal(plane, stack[2])
        assert image.getPixelSizeX() == pytest.approx(0.25)
        assert image.getChannelLabels() == ["DAPI"]
        pairs = {
            ann.getNs(): dict(ann.getValue())
            for ann in image.listAnnotations()
            if ann.getNs() in (NS_ACQUISITION, NS_REGISTRATION)
        }
        assert pairs[NS_ACQUISITION] == {"objective": "20x", "stage.x_um": "10.5"}
        assert pairs[NS_REGISTRATION]["scopeflow.run_id"] == "live-run"
        assert pairs[NS_REGISTRATION]["scopeflow.key"] == request.key
    finally:
        gateway.close()


def test_spool_delivers_to_the_live_server(live, tmp_path: Path) -> None:
    settings, project = live
    store = write_zstack(tmp_path / "s.ome.zarr", np.ones((8, 8), "uint8"), pixel_size_um=1)
    with OmeroRegistrar(settings) as registrar:
        spool = OmeroSpool.from_settings(settings, registrar)
        key = spool.submit(RegistrationRequest(path=store, project=project, dataset="d2"))
        assert spool.drain(timeout=120)
        spool.close()
    result = spool.result(key)
    assert result is not None and len(result.image_ids) == 1
