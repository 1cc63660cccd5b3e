"""Compute profiles: loaded by name from the settings file, turned into real job scripts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from scopeflow import (
    ComputeUnavailable,
    ConfigurationError,
    LocalComputeProfile,
    PbsComputeProfile,
    RayComputeProfile,
    SlurmComputeProfile,
    load_settings,
)
from tasks.compute import available_profiles, get_profile, group_items, job_script, open_runner

TOML = """
[compute_profiles.hpc]
kind = "slurm"
queue = "gpu"
account = "imaging"
jobs = 4
gpus = 1
memory = "32GiB"
walltime = "04:00:00"
prologue = ["module load cuda/12.4"]
job_extra_directives = ["--constraint=a100"]

[compute_profiles.pbs]
kind = "pbs"
queue = "workq"
account = "proj1"
cores = 8
gpus = 2
memory = "64GiB"

[compute_profiles.kuberay]
kind = "ray"
address = "ray://raycluster-head:10001"
gpus_per_worker = 1
"""


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "scopeflow.toml"
    path.write_text(TOML)
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(path))
    return load_settings()


def test_profiles_from_the_settings_file_by_name(settings) -> None:
    profiles = available_profiles(settings)
    assert set(profiles) == {"local", "local-ray", "hpc", "pbs", "kuberay"}
    assert isinstance(profiles["local"], LocalComputeProfile) and profiles["local"].engine == "dask"
    assert isinstance(profiles["hpc"], SlurmComputeProfile) and profiles["hpc"].gpus == 1
    assert isinstance(profiles["pbs"], PbsComputeProfile)
    assert isinstance(get_profile("kuberay", settings), RayComputeProfile)
    with pytest.raises(ConfigurationError, match=r"available: hpc, kuberay, local, local-ray"):
        get_profile("nope", settings)


def test_a_profile_of_unknown_kind_or_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="kind"):
        load_settings(compute_profiles={"x": {"kind": "lsf"}})
    with pytest.raises(ValidationError, match="gpu"):
        load_settings(compute_profiles={"x": {"kind": "slurm", "gpu": 1}})


def test_slurm_job_script_asks_for_gpus_account_queue_and_runs_the_prologue(settings) -> None:
    script = job_script(get_profile("hpc", settings))
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A imaging",
        "#SBATCH --gpus=1",
        "#SBATCH --constraint=a100",
        "#SBATCH -t 04:00:00",
        "#SBATCH --mem=32G",
        "module load cuda/12.4",
    ):
        assert line in script, f"{line!r} missing from:\n{script}"
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script
    assert "--resources GPU=1" in script  # tasks ask for it, so one task per GPU
    assert script.index("module load") < script.index("dask_worker")


def test_pbs_job_script_selects_gpus(settings) -> None:
    script = job_script(get_profile("pbs", settings))
    assert "#PBS -q workq" in script and "#PBS -A proj1" in script
    assert "#PBS -l select=1:ncpus=8:mem=65536mb:ngpus=2" in script
    assert "--resources GPU=2" in script and "--nthreads 8" in script


def test_unreachable_ray_cluster_names_the_fix() -> None:
    profile = RayComputeProfile(address="127.0.0.1:9", connect_timeout_s=2)
    with pytest.raises(ComputeUnavailable, match="cannot connect to the Ray cluster"):
        open_runner(profile)


def test_groups_are_balanced_and_bounded() -> None:
    groups = group_items(list(range(100)), workers=2)
    assert [x for g in groups for x in g] == list(range(100))
    assert len(groups) >= 8 and max(len(g) for g in groups) <= 16
    assert group_items([], workers=2) == []
    assert [len(g) for g in group_items(list(range(3)), workers=2)] == [1, 1, 1]


def test_a_ray_profile_never_runs_on_another_connected_cluster(monkeypatch) -> None:
    from tasks.compute import _ray_runner  # noqa: PLC2701 (shortens its actor start timeout)

    with open_runner(LocalComputeProfile(engine="ray", workers=1)) as local:
        gcs = local.describe()["address"]
        other = RayComputeProfile(address="127.0.0.1:9", connect_timeout_s=2)
        with pytest.raises(ComputeUnavailable, match="already connected to the cluster at"):
            open_runner(other)
        # the same cluster by its GCS address: the open session is used, and a profile asking
        # for more actors than it has CPUs for says so instead of waiting for ever
        monkeypatch.setattr(_ray_runner, "ACTOR_START_TIMEOUT_S", 3.0)
        crowded = RayComputeProfile(address=gcs, workers=3, cpus_per_worker=1.0)
        with pytest.raises(ComputeUnavailable, match=r"did not all start within 3 s.*lower"):
            open_runner(crowded)
        monkeypatch.undo()
        with open_runner(RayComputeProfile(address=gcs, workers=1)) as same:
            assert same.run_on_workers(lambda: 41 + 1) == [42]
