"""The registrar's server path against a local stand-in of the BlitzGateway surface it uses
(tests/omero_fake.py): project/dataset lookup and reuse, upload, annotations, key reuse, a link
lost mid-registration, and an acquisition queued through the spool and drained into it.
No OMERO server runs here; tests/test_omero_live.py runs the same path against a real one."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from scopeflow import OmeroSettings, OmeroUnavailable
from tasks.storage import write_zstack
from tasks.storage.omero import (
    NS_ACQUISITION,
    NS_REGISTRATION,
    OmeroRegistrar,
    OmeroSpool,
    RegistrationRequest,
    queue_acquisition,
)

from .omero_fake import FakeBlitzGateway, FakeOmeroServer
from .test_omero_support import require_omero_py


@pytest.fixture()
def server() -> FakeOmeroServer:
    require_omero_py()
    return FakeOmeroServer()


def _settings(tmp_path: Path) -> OmeroSettings:
    return OmeroSettings(host="omero.fake.invalid", username="facility", spill_dir=tmp_path / "s")


def _store(path: Path, seed: int) -> tuple[Path, np.ndarray]:
    stack = np.random.default_rng(seed).integers(0, 4000, (3, 32, 48), dtype=np.uint16)
    return write_zstack(path, stack, pixel_size_um=0.65, z_step_um=2.0, channel="DAPI"), stack


def test_the_fake_has_blitzgateways_signatures() -> None:
    require_omero_py()
    from omero.gateway import BlitzGateway

    used = [
        n for n, m in inspect.getmembers(FakeBlitzGateway, inspect.isfunction)
        if not n.startswith("_")
    ]  # fmt: skip
    assert len(used) >= 10
    for name in used:
        ours = inspect.signature(getattr(FakeBlitzGateway, name)).parameters
        real = inspect.signature(getattr(BlitzGateway, name)).parameters
        assert list(ours) == list(real), name
        for param in ours:
            theirs = real[param].default
            if not isinstance(theirs, dict):  # omero-py's opts={} is our opts=None
                assert ours[param].default == theirs, (name, param)


def test_registration_creates_project_dataset_image_and_annotations_then_reuses_them(
    server: FakeOmeroServer, tmp_path: Path
) -> None:
    store, stack = _store(tmp_path / "a.ome.zarr", 1)
    request = RegistrationRequest(
        path=store,
        project="facility",
        dataset="run-1",
        run_id="run-1",
        metadata={"provenance": {"flow": "targeted-imaging"}, "qc": {"focus": {"verdict": "ok"}}},
    )
    registrar = OmeroRegistrar(_settings(tmp_path), gateway=server.connect)
    first = registrar.register(request)
    (image,) = server.images.values()
    assert first.image_ids == (image.id,) and not first.reused
    np.testing.assert_array_equal(image.planes[0, 0], stack)  # (t, c, z, y, x) on the server
    assert image.getParent().getId() == first.dataset_id
    assert image.getParent().getParent().getId() == first.project_id
    assert [c.getLogicalChannel().getName() for c in image.channels] == ["DAPI"]
    assert server.pixel_sizes[image.pixels_id] == {"x": 0.65, "y": 0.65, "z": 2.0}
    acquisition = image.map_annotations(NS_ACQUISITION)
    assert acquisition["provenance.flow"] == "targeted-imaging"
    assert acquisition["qc.focus.verdict"] == "ok"
    assert image.map_annotations(NS_REGISTRATION)["scopeflow.key"] == request.key

    again = registrar.register(request)  # the same key: nothing uploaded
    assert again.reused and again.image_ids == first.image_ids and len(server.images) == 1
    other, _ = _store(tmp_path / "b.ome.zarr", 2)
    second = registrar.register(request.model_copy(update={"path": other, "key": ""}))
    assert second.key != request.key and len(server.images) == 2
    assert (second.project_id, second.dataset_id) == (first.project_id, first.dataset_id)
    assert server.named("Project") == [(first.project_id, "facility")]
    registrar.close()


def test_a_link_lost_mid_registration_is_retried_and_leaves_one_complete_image(
    server: FakeOmeroServer, tmp_path: Path
) -> None:
    store, _ = _store(tmp_path / "a.ome.zarr", 3)
    request = RegistrationRequest(path=store, project="p", dataset="d", run_id="r")
    server.fail_on_annotation = 2  # the acquisition annotation saves, the registration's not
    registrar = OmeroRegistrar(_settings(tmp_path), gateway=server.connect)
    with pytest.raises(OmeroUnavailable):
        registrar.register(request)
    (partial,) = server.images.values()
    assert NS_REGISTRATION not in {ns for ns, _ in partial.annotations}
    result = registrar.register(request)  # a new session: the partial image is replaced
    assert server.sessions == 2
    (image,) = server.images.values()
    assert image.id != partial.id and result.image_ids == (image.id,)
    assert image.map_annotations(NS_REGISTRATION)["scopeflow.key"] == request.key


def test_a_finished_acquisition_goes_through_the_spool_into_omero(
    server: FakeOmeroServer, tmp_path: Path
) -> None:
    run = tmp_path / "run" / "targets"
    stores = [_store(run / f"target-{i:04d}.ome.zarr", i)[0] for i in range(3)]
    settings = _settings(tmp_path)
    keys = queue_acquisition(
        stores,
        run_id="ti-1",
        project="targeted-imaging",
        provenance={"flow": "targeted-imaging", "edge_url": "http://127.0.0.1:8765"},
        qc={"anomalies": 0},
        settings=settings,
    )
    assert len(keys) == 1  # one request for the folder of stores
    assert queue_acquisition(stores, run_id="ti-1", project="targeted-imaging", settings=settings)
    with OmeroSpool.from_settings(
        settings, OmeroRegistrar(settings, gateway=server.connect)
    ) as spool:
        assert spool.drain(timeout=60)
        stats = spool.stats()
        assert (stats.delivered, stats.duplicates, stats.failed) == (1, 1, 0)
    assert len(server.images) == 3  # the second request had the same key: delivered once
    for image in server.images.values():
        pairs = image.map_annotations(NS_ACQUISITION)
        assert pairs["provenance.edge_url"] == "http://127.0.0.1:8765"
        assert pairs["qc.anomalies"] == "0"
        assert image.map_annotations(NS_REGISTRATION)["scopeflow.run_id"] == "ti-1"


def test_without_omero_configured_nothing_is_queued(tmp_path: Path) -> None:
    settings = OmeroSettings(spill_dir=tmp_path / "s")
    store, _ = _store(tmp_path / "a.ome.zarr", 0)
    assert queue_acquisition([store], run_id="r", project="p", settings=settings) == []
    assert not (tmp_path / "s").exists()
