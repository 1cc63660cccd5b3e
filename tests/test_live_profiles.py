"""Live inference backends from compute profiles, on real local clusters: the door live loops
share with the batch flows (``backend_for_profile``), and the Ray backend's least-loaded
dispatch. The SLURM case is in ``tests/test_slurm.py`` (it needs SLURM)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from flows import TargetedImagingParams, TrackingParams
from scopeflow import (
    ComputeUnavailable,
    ConfigurationError,
    LocalComputeProfile,
    RayComputeProfile,
    load_settings,
)
from tasks.hardware import EdgeProcess
from tasks.inference import (
    BackendUnavailable,
    InferenceBackend,
    ObjectTable,
    backend_for_profile,
    measure_objects,
)
from tests.inference_test_models import ThresholdModel
from tests.test_inference_backends import make_frames

MODELS = "tests.inference_test_models"
THRESHOLD = f"{MODELS}:ThresholdModel"

pytestmark = pytest.mark.timeout(180)

PROFILES_TOML = """
[compute_profiles.hpc]
kind = "slurm"
queue = "gpu"
jobs = 2
processes = 2
gpus = 2

[compute_profiles.kuberay]
kind = "ray"
address = "ray://raycluster-head:10001"
gpus_per_worker = 1
"""


@pytest.fixture()
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "scopeflow.toml"
    path.write_text(PROFILES_TOML)
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(path))
    return path


def assert_objects_of(table: object, frame: np.ndarray) -> None:
    """``table`` is the ObjectTable of ``frame`` segmented by ThresholdModel, measured here."""
    want = measure_objects(ThresholdModel().segment(frame), frame)
    assert isinstance(table, ObjectTable)
    assert len(table) == len(want) > 0
    np.testing.assert_array_equal(table.label, want.label)
    np.testing.assert_allclose(table.centroid_row, want.centroid_row)
    np.testing.assert_allclose(table.mean_intensity, want.mean_intensity)


def test_an_unknown_profile_name_lists_the_choices(settings_file: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigurationError, match=r"'nope'; available: hpc, kuberay, local, local"):
        backend_for_profile("nope", THRESHOLD)
    params = TrackingParams(positions=[{"name": "p0", "x_um": 0, "y_um": 0}], profile="nope")
    with pytest.raises(ConfigurationError, match=r"available: hpc, kuberay, local, local-ray"):
        params.compute_profile()
    ti = TargetedImagingParams(region={"x0": 0, "y0": 0, "x1": 1, "y1": 1}, profile="nope")
    with pytest.raises(ConfigurationError, match=r"available: hpc, kuberay, local, local-ray"):
        ti.compute_profile()
    assert time.perf_counter() - started < 5  # refused before any cluster work


def test_live_flows_take_a_profile_by_name(settings_file: Path) -> None:
    params = TrackingParams(positions=[{"name": "p0", "x_um": 0, "y_um": 0}], profile="hpc")
    profile = params.compute_profile()
    assert profile is not None and profile.kind == "slurm" and profile.jobs == 2
    assert (
        TrackingParams(positions=[{"name": "p0", "x_um": 0, "y_um": 0}]).compute_profile() is None
    )
    ti = TargetedImagingParams(region={"x0": 0, "y0": 0, "x1": 1, "y1": 1}, profile="kuberay")
    assert ti.compute_profile() == load_settings().compute_profiles["kuberay"]


def test_an_unreachable_ray_profile_names_the_address_and_the_fix() -> None:
    profile = RayComputeProfile(address="127.0.0.1:9", connect_timeout_s=2)
    with pytest.raises(
        BackendUnavailable, match=r"cannot connect to the Ray cluster at '127.0\.0\.1:9'.*local-ray"
    ) as err:
        backend_for_profile(profile, THRESHOLD)
    assert isinstance(err.value, ComputeUnavailable)  # what the batch runners raise, too


def test_a_dask_backend_from_the_local_profile_segments_a_frame() -> None:
    frame = make_frames(1, seed=21)[0]
    with backend_for_profile("local", THRESHOLD, workers=1) as backend:
        assert_objects_of(backend.submit(frame, pixel_size_um=0.65, objects=True).result(60), frame)
        info = backend.info()
    assert info["kind"] == "dask" and info["profile_kind"] == "local"
    assert info["started_cluster"] and info["workers"] == 1
    assert info["per_worker"][0]["frames"] == 1
    assert info["per_worker"][0]["slurm_job_id"] is None


def test_a_ray_backend_from_the_local_profile_sends_frames_to_the_least_loaded_actor(
    tmp_path: Path,
) -> None:
    """Two actors, one of them slow (0.5 s a frame): frames arriving every 50 ms go to the
    actor with the fewest frames in flight, so the fast one takes most of them (round-robin
    would give each half)."""
    claim = tmp_path / "slow-actor.pid"
    options = {"claim": str(claim), "delay_s": 0.5}
    profile = LocalComputeProfile(engine="ray", workers=2)
    frame = make_frames(1, seed=22)[0]
    backend: InferenceBackend
    with backend_for_profile(profile, f"{MODELS}:OneSlowWorker", options) as backend:
        info = backend.info()
        assert info["kind"] == "ray" and info["profile_kind"] == "local"
        assert info["started_cluster"] and info["workers"] == 2
        assert_objects_of(backend.submit(frame, objects=True).result(60), frame)

        slow_pid = int(claim.read_text())
        before = {w["pid"]: w["frames"] for w in backend.info()["per_worker"]}
        assert slow_pid in before and len(before) == 2
        futures = []
        for i in range(20):
            futures.append(backend.submit(frame, frame_index=100 + i))
            time.sleep(0.05)
        for future in futures:
            future.result(timeout=60)
        info = backend.info()
        assert info["in_flight"] == [0, 0]
        done = {w["pid"]: w["frames"] - before[w["pid"]] for w in info["per_worker"]}
    slow = done.pop(slow_pid)
    (fast,) = done.values()
    assert slow + fast == 20
    assert fast >= 14 and slow <= 6, f"fast actor {fast} frames, slow actor {slow}"


@pytest.mark.slow
def test_a_tracking_run_puts_its_workers_on_a_compute_profile(
    prefect_harness: None, edge: EdgeProcess, tmp_path: Path
) -> None:
    """``TrackingParams(profile="local")``: the live loop's model runs on the Dask workers the
    ``local`` profile starts (as a batch flow's would), every frame analysed there in time."""
    from flows.tracking import tracking

    params = TrackingParams(
        positions=[{"name": "p0", "x_um": 5000, "y_um": 5000}],
        time_points=3,
        interval_s=1.0,
        profile="local",
        deadline_ms=10_000,  # where the model runs is checked here, not how fast (benchmarks)
        edge_url=edge.url,
        edge_token_file=edge.token_file,
        output_dir=tmp_path,
    )
    summary = tracking(params)
    assert summary["analysis"] == {
        "engine": "dask",
        "profile": "local",
        "profile_kind": "local",
        "workers": 2,
    }
    assert summary["fallback_decisions"] == 0, summary
    assert summary["tracked_cells"] > 0
