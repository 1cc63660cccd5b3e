"""Batch flows over stored OME-Zarr on real local clusters (Dask LocalCluster, local Ray).

The model is ``tests.batch_test_models:CountingThreshold`` (a fixed threshold, so segmenting
the whole image at once is the reference the stitched tiles must reproduce).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask
import distributed  # noqa: F401  (loads its config defaults before dask.config.set)
import numpy as np
import pytest
import zarr
from scipy import ndimage

from flows.restore_dataset import RestoreDatasetParams, restore_dataset_on
from flows.segment_dataset import SegmentDatasetParams, segment_dataset_on
from scopeflow import ChunksFailed, ConfigurationError, LocalComputeProfile
from tasks.compute import ChunkRunner, open_runner
from tasks.compute.synthetic_workload import blob_image
from tasks.storage import label_path, write_zstack
from tests.conftest import validate_store

pytestmark = pytest.mark.timeout(240)

MODEL = "tests.batch_test_models:CountingThreshold"
# a disc on the corner of four 96-px tiles, a bar across three tiles, small ones inside tiles
CENTRES = [(96, 96), (30, 30), (150, 40), (40, 160), (230, 230), (250, 100)]


def make_image(tmp_path: Path, planes: int = 2) -> tuple[Path, np.ndarray]:
    image = blob_image((planes, 288, 288), CENTRES, radius=14)
    image[:, 180:190, 20:270] = 1000  # the bar
    store = write_zstack(tmp_path / "img.ome.zarr", image, pixel_size_um=0.5, z_step_um=2.0)
    return store, image


def assert_same_objects(got: np.ndarray, want: np.ndarray) -> None:
    """Same pixels in the same objects, whatever the label numbers."""
    np.testing.assert_array_equal(got > 0, want > 0)
    fg = want > 0
    pairs = np.unique(np.stack([want[fg], got[fg]], axis=1), axis=0)
    assert len(pairs) == len(np.unique(want[fg])) == len(np.unique(got[fg])), (
        "objects were split or merged by the tiling"
    )


def reference(image: np.ndarray) -> np.ndarray:
    out = np.zeros(image.shape, dtype=np.int64)
    offset = 0
    for i in range(image.shape[0]):
        lab, n = ndimage.label(image[i] > 500, structure=np.ones((3, 3)))
        out[i] = np.where(lab > 0, lab + offset, 0)
        offset += n
    return out


def read_labels(store: Path, name: str = "nuclei") -> np.ndarray:
    return np.asarray(zarr.open_array(label_path(store, name) / "0")[...])


def calls(count: Path) -> int:
    return len(count.read_text().splitlines())


@pytest.fixture(scope="module")
def dask_runner() -> Iterator[ChunkRunner]:
    # a task whose worker dies is not retried on another worker: the run reports it at once
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        runner = open_runner(LocalComputeProfile(engine="dask", workers=2))
    with runner:
        yield runner


def test_segment_stitches_like_whole_image_and_is_valid_ngff(dask_runner, tmp_path) -> None:
    store, image = make_image(tmp_path)
    count = tmp_path / "calls.txt"
    count.touch()
    params = SegmentDatasetParams(
        image=store, model=MODEL, model_options={"count_file": str(count)}, tile=96, halo=16
    )
    summary = segment_dataset_on(dask_runner, params)
    assert summary["tiles"] == 2 * 9 and calls(count) == 18
    assert summary["seam_merges"] > 0
    labels = read_labels(store)
    assert labels.dtype == np.uint32
    assert_same_objects(labels, reference(image))
    assert summary["objects"] == len(np.unique(labels)) - 1
    validate_store(store)
    prov = zarr.open_group(label_path(store, "nuclei")).attrs["scopeflow"]
    assert prov["status"] == "complete" and prov["model"]["version"] == "1.0"
    assert prov["parameters"]["tile"] == 96 and prov["run"]["run_id"] == summary["run_id"]
    # finished: a re-run calls the model no more
    again = segment_dataset_on(dask_runner, params)
    assert again["complete_already"] and calls(count) == 18


def test_a_killed_run_resumes_without_redoing_finished_tiles(dask_runner, tmp_path) -> None:
    store, image = make_image(tmp_path, planes=1)
    count, die = tmp_path / "calls.txt", tmp_path / "die"
    count.touch()
    die.write_text("4")  # one worker process exits hard at the 5th model call
    params = SegmentDatasetParams(
        image=store,
        model=MODEL,
        model_options={"count_file": str(count), "die_file": str(die)},
        tile=96,
        halo=16,
        tiles_per_task=3,
    )
    with pytest.raises(ChunksFailed, match="re-run the same command to resume") as info:
        segment_dataset_on(dask_runner, params)
    assert "worker died" in str(info.value) and not die.exists()
    failed, done = info.value.failed, info.value.done
    assert failed and done >= 4 and done + len(failed) == 9
    assert calls(count) == done  # every finished tile called the model once
    summary = segment_dataset_on(dask_runner, params)
    assert summary["skipped"] == done and summary["segmented"] == len(failed)
    assert calls(count) == 9  # the re-run segmented only what was missing
    assert_same_objects(read_labels(store), reference(image))


def test_restore_matches_whole_image_and_resumes(dask_runner, tmp_path) -> None:
    from tasks.inference import load_restoration_model

    store, image = make_image(tmp_path)
    out = tmp_path / "restored.ome.zarr"
    params = RestoreDatasetParams(image=store, output=out, model="gaussian", tile=96, halo=24)
    summary = restore_dataset_on(dask_runner, params)
    assert summary["restored"] == 18 and summary["model"]["name"] == "gaussian"
    blur = load_restoration_model("gaussian")
    want = np.stack([blur.restore(plane) for plane in image])
    np.testing.assert_allclose(zarr.open_array(out / "0")[...], want, atol=1e-3)
    prov = zarr.open_group(out).attrs["scopeflow"]
    assert prov["status"] == "complete" and prov["run"]["run_id"] == summary["run_id"]
    validate_store(out)
    assert restore_dataset_on(dask_runner, params)["complete_already"]
    other = params.model_copy(update={"halo": 8})
    with pytest.raises(ConfigurationError, match="choose another --output"):
        restore_dataset_on(dask_runner, other)


def test_segment_flow_in_prefect_on_ray(prefect_harness, tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.segment_dataset import segment_dataset

    store, image = make_image(tmp_path)
    params = SegmentDatasetParams(
        image=store, model=MODEL, profile="local-ray", tile=96, halo=16, tiles_per_task=6
    )
    state = segment_dataset(params, return_state=True)
    summary = state.result()
    assert summary["tiles"] == 18 and summary["segmented"] == 18
    assert summary["model"]["name"] == "counting-threshold"
    assert_same_objects(read_labels(store), reference(image))
    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        names = sorted(r.name for r in client.read_task_runs(flow_run_filter=flow_run))
    # one Prefect task per batch of 6 tiles, never one per tile
    assert [n for n in names if n.startswith("segment-chunks")] == [
        "segment-chunks-0",
        "segment-chunks-1",
        "segment-chunks-2",
    ]
    assert {"plan-segmentation", "stitch-labels", "write-provenance"} <= set(names)
