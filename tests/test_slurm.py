"""Segment a dataset through dask-jobqueue on real ``sbatch`` jobs (SLURM from ci/slurm_up.sh).

Skipped with the reason when no SLURM answers here; with ``SCOPEFLOW_REQUIRE_SLURM=1`` (CI) a
missing SLURM fails the test instead, so CI can never pass it silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.segment_dataset import SegmentDatasetParams, segment_dataset_on
from scopeflow import SlurmComputeProfile
from tasks.compute import open_runner
from tasks.compute.synthetic_workload import blob_image
from tasks.storage import label_path, write_zstack
from tests.conftest import REPO, validate_store

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

MODEL = "tests.batch_test_models:CountingThreshold"


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


@pytest.fixture()
def slurm_runner(slurm_partition: str, tmp_path: Path) -> Iterator:
    profile = SlurmComputeProfile(
        queue=slurm_partition,
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
    runner = open_runner(profile)
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
