"""Segment a dataset through dask-jobqueue on real ``sbatch`` jobs (SLURM from ci/slurm_up.sh),
and run a live inference backend from a SLURM compute profile.

Skipped with the reason when no SLURM answers here; with ``SCOPEFLOW_REQUIRE_SLURM=1`` (CI) a
missing SLURM fails the test instead, so CI can never pass it silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.segment_dataset import SegmentDatasetParams, segment_dataset_on
from scopeflow import SlurmComputeProfile
from tasks.compute import open_runner
from tasks.compute.synthetic_workload import blob_image
from tasks.inference import ObjectTable, backend_for_profile, measure_objects
from tasks.storage import label_path, write_zstack
from tests.conftest import REPO, validate_store
from tests.inference_test_models import ThresholdModel

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

MODEL = "tests.batch_test_models:CountingThreshold"
MODEL_LIVE = "tests.inference_test_models:ThresholdModel"


def _slurm_problem() -> str | None:
    """Why SLURM cannot be used here, or None when a partition has a usable node."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch/sinfo not found: SLURM is not installed (run ci/slurm_up.sh as root)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed ({exc}): is slurmctld running? (ci/slurm_up.sh)"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()} (start SLURM with ci/slurm_up.sh)"
    states = [line.split() for line in out.stdout.splitlines() if line.strip()]
    if not any(s[1].rstrip("*") in ("idle", "mix", "alloc") for s in states if len(s) == 2):
        return f"no SLURM node is idle/mix/alloc: {out.stdout.strip()!r} (ci/slurm_up.sh)"
    return None


@pytest.fixture(scope="module")
def slurm_partition() -> str:
    problem = _slurm_problem()
    if problem is not None:
        if os.environ.get("SCOPEFLOW_REQUIRE_SLURM") == "1":
            pytest.fail(f"SCOPEFLOW_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True)
    return out.stdout.split()[0].rstrip("*")


def _squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=20)
    return set(out.stdout.split())


def _profile(partition: str, tmp_path: Path) -> SlurmComputeProfile:
    """One single-core job on this node, its worker importing the repository (models, tests)."""
    return SlurmComputeProfile(
        queue=partition,
        jobs=1,
        cores=1,
        processes=1,
        memory="2GiB",
        walltime="00:10:00",
        host="127.0.0.1",
        python=sys.executable,
        log_directory=tmp_path / "slurm-logs",
        prologue=[f"cd {REPO}", f"export PYTHONPATH={REPO}"],
        startup_timeout_s=90,
    )


@pytest.fixture()
def slurm_runner(slurm_partition: str, tmp_path: Path) -> Iterator:
    runner = open_runner(_profile(slurm_partition, tmp_path))
    job_ids: set[str] = set()
    try:
        job_ids = {str(job.job_id) for job in runner.cluster.workers.values() if job.job_id}
        yield runner
    finally:
        job_ids |= {str(job.job_id) for job in runner.cluster.workers.values() if job.job_id}
        runner.close()
        leftover = job_ids & _squeue_ids()
        if leftover:
            subprocess.run(["scancel", *sorted(leftover)], check=False, timeout=20)


def test_segment_dataset_on_slurm_jobs(slurm_runner, tmp_path: Path) -> None:
    # 4 tiles of 256 x 256; one disc sits on the point where all four meet
    image = blob_image((512, 512), [(256, 256), (60, 60), (400, 120), (120, 420)], radius=24)
    store = write_zstack(tmp_path / "img.ome.zarr", image, pixel_size_um=0.5)
    count = tmp_path / "calls.txt"
    count.touch()

    job_ids = slurm_runner.run_on_workers(lambda: os.environ.get("SLURM_JOB_ID"))
    assert job_ids and all(job_ids), f"workers not inside SLURM jobs: {job_ids}"
    assert set(job_ids) <= _squeue_ids(), "the workers' jobs are not in squeue"

    params = SegmentDatasetParams(
        image=store, model=MODEL, model_options={"count_file": str(count)}, tile=256, halo=24
    )
    summary = segment_dataset_on(slurm_runner, params)
    assert summary["tiles"] == 4 and summary["segmented"] == 4
    assert summary["run_id"] and summary["model"]["name"] == "counting-threshold"
    assert len(count.read_text().splitlines()) == 4

    import zarr

    labels = np.asarray(zarr.open_array(label_path(store, "nuclei") / "0")[...])
    assert sorted(np.unique(labels)) == [0, 1, 2, 3, 4]
    assert np.unique(labels[232:280, 232:280][labels[232:280, 232:280] > 0]).size == 1
    validate_store(store)


def test_a_live_backend_from_a_slurm_profile_runs_its_worker_in_a_slurm_job(
    slurm_partition: str, tmp_path: Path
) -> None:
    """The door live loops share with the batch flows: the same profile submits the same
    dask-jobqueue job; the backend's worker runs inside it, segments a frame sent by
    ``submit(objects=True)``, and the job is gone once the backend is closed."""
    image = blob_image((128, 128), [(30, 30), (90, 40), (64, 100)], radius=8)
    backend = backend_for_profile(_profile(slurm_partition, tmp_path), MODEL_LIVE)
    job_ids: set[str] = set()
    try:
        job_ids = {str(j.job_id) for j in backend.cluster.workers.values() if j.job_id}
        info = backend.info()
        assert info["kind"] == "dask" and info["profile_kind"] == "slurm"
        assert info["started_cluster"] and info["workers"] == 1
        job = info["per_worker"][0]["slurm_job_id"]
        assert job and job in job_ids, f"the worker is not in the backend's job: {info}"
        assert job in _squeue_ids(), "the worker's job is not in squeue"

        table = backend.submit(image, pixel_size_um=0.5, objects=True).result(timeout=60)
        want = measure_objects(ThresholdModel().segment(image), image)
        assert isinstance(table, ObjectTable) and len(table) == len(want) == 3
        np.testing.assert_allclose(table.centroid_row, want.centroid_row)
        assert backend.info()["per_worker"][0]["frames"] == 1
    finally:
        backend.close()
        deadline = time.monotonic() + 30
        while job_ids & _squeue_ids() and time.monotonic() < deadline:
            time.sleep(0.5)
        leftover = job_ids & _squeue_ids()
        if leftover:
            subprocess.run(["scancel", *sorted(leftover)], check=False, timeout=20)
    assert job_ids and not leftover, f"jobs {sorted(leftover)} still queued after close()"
