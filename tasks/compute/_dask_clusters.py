"""Profile -> Dask cluster: LocalCluster, or dask-jobqueue's SLURMCluster / PBSCluster.

GPUs are asked for with each engine's own mechanism: SLURM ``--gpus=N`` (a job directive),
PBS ``ngpus`` in the ``select`` resource spec, and on every Dask worker a ``GPU`` resource
(``--resources GPU=n``) that GPU tasks request, so the scheduler never puts two on one GPU.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from scopeflow import (
    ComputeUnavailable,
    ConfigurationError,
    JobqueueComputeProfile,
    LocalComputeProfile,
    PbsComputeProfile,
    SlurmComputeProfile,
)

__all__ = [
    "dask_cluster",
    "gpus_per_dask_worker",
    "job_script",
    "jobqueue_cluster",
    "jobqueue_kwargs",
    "local_dask_cluster",
    "wait_for_first_worker",
]


def gpus_per_dask_worker(profile: LocalComputeProfile | JobqueueComputeProfile) -> float:
    """The ``GPU`` resource each Dask worker of ``profile`` offers (and each task asks for)."""
    if isinstance(profile, LocalComputeProfile):
        return profile.gpus_per_worker
    return profile.gpus / profile.processes


def local_dask_cluster(profile: LocalComputeProfile) -> Any:
    """A LocalCluster of single-threaded worker processes on 127.0.0.1, no dashboard."""
    from distributed import LocalCluster

    gpus = gpus_per_dask_worker(profile)
    return LocalCluster(
        n_workers=profile.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=profile.memory_per_worker or 0,
        resources={"GPU": gpus} if gpus > 0 else None,
        silence_logs=logging.WARNING,
    )


def jobqueue_kwargs(profile: JobqueueComputeProfile) -> dict[str, Any]:
    """Keyword arguments for SLURMCluster / PBSCluster from a profile (no jobs are started)."""
    gpus = gpus_per_dask_worker(profile)
    worker_args: list[str] = []
    if gpus > 0:
        worker_args += ["--resources", f"GPU={gpus:g}"]
    if profile.host is not None and profile.interface is None:
        # workers listen on the same address family as the scheduler (single node, CI)
        worker_args += ["--host", profile.host]
    kwargs: dict[str, Any] = {
        "cores": profile.cores,
        "processes": profile.processes,
        "memory": profile.memory,
        "walltime": profile.walltime,
        "queue": profile.queue,
        "python": profile.python or sys.executable,
        "job_script_prologue": list(profile.prologue),
        "worker_extra_args": worker_args,
        "scheduler_options": {"dashboard_address": None},
        "silence_logs": "warning",
    }
    if profile.host is not None:
        kwargs["scheduler_options"]["host"] = profile.host
    if profile.interface is not None:
        kwargs["interface"] = profile.interface
    if profile.log_directory is not None:
        kwargs["log_directory"] = str(profile.log_directory)
    if profile.local_directory is not None:
        kwargs["local_directory"] = profile.local_directory
    directives = list(profile.job_extra_directives)
    if isinstance(profile, SlurmComputeProfile):
        kwargs["account"] = profile.account
        if profile.gpus > 0:
            directives.append(f"--gpus={profile.gpus}")
    elif isinstance(profile, PbsComputeProfile):
        kwargs["account"] = profile.account
        kwargs["resource_spec"] = profile.resource_spec or _pbs_select(profile)
    kwargs["job_extra_directives"] = directives
    return kwargs


def _pbs_select(profile: PbsComputeProfile) -> str:
    spec = f"select=1:ncpus={profile.cores}:mem={_pbs_memory(profile.memory)}"
    if profile.gpus > 0:
        spec += f":ngpus={profile.gpus}"
    return spec


def _pbs_memory(memory: str) -> str:
    """'16GiB' -> '16gb' (PBS units)."""
    from dask.utils import parse_bytes

    return f"{max(1, parse_bytes(memory) // 2**20)}mb"


def jobqueue_cluster(profile: JobqueueComputeProfile) -> Any:
    """A SLURMCluster or PBSCluster for ``profile``; no jobs yet (the runner scales it)."""
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ConfigurationError(
            f"compute profile kind {getattr(profile, 'kind', '?')!r} needs dask-jobqueue: "
            "pip install 'scopeflow[hpc]'"
        ) from exc
    cls = (
        dask_jobqueue.SLURMCluster
        if isinstance(profile, SlurmComputeProfile)
        else dask_jobqueue.PBSCluster
    )
    try:
        return cls(**jobqueue_kwargs(profile))
    except (ValueError, OSError) as exc:
        raise ConfigurationError(
            f"cannot set up a {cls.__name__} from the {profile.kind!r} profile: {exc}; "  # type: ignore[attr-defined]
            "check queue, memory ('4GiB'), walltime ('HH:MM:SS') and interface"
        ) from exc


def job_script(profile: JobqueueComputeProfile) -> str:
    """The batch script a SLURM / PBS profile submits per job (nothing is submitted)."""
    cluster = jobqueue_cluster(profile)
    try:
        script: str = cluster.job_script()
    finally:
        cluster.close()
    return script


def dask_cluster(profile: LocalComputeProfile | JobqueueComputeProfile) -> Any:
    """The Dask cluster a ``local`` (engine dask), ``slurm`` or ``pbs`` profile describes, started:
    a LocalCluster, or a SLURMCluster / PBSCluster with ``profile.jobs`` jobs submitted. Batch
    runners and live inference backends both start theirs here; ``close()`` on it stops the
    workers (and cancels the batch jobs). Wait for the jobs with ``wait_for_first_worker``."""
    if isinstance(profile, LocalComputeProfile):
        return local_dask_cluster(profile)
    cluster = jobqueue_cluster(profile)
    try:
        cluster.scale(jobs=profile.jobs)
    except BaseException:
        cluster.close()
        raise
    return cluster


def wait_for_first_worker(
    client: Any, profile: LocalComputeProfile | JobqueueComputeProfile
) -> None:
    """Return once one worker of a ``slurm`` / ``pbs`` profile's jobs has joined ``client``'s
    scheduler (a LocalCluster's workers are there already); ComputeUnavailable naming where to
    look after ``profile.startup_timeout_s`` (the queue time included)."""
    if isinstance(profile, LocalComputeProfile):
        return
    try:
        client.wait_for_workers(1, timeout=profile.startup_timeout_s)
    except TimeoutError as exc:
        raise ComputeUnavailable(
            f"no Dask worker joined within {profile.startup_timeout_s:g} s after submitting "
            f"{profile.jobs} {profile.kind} job(s); check the queue (squeue / qstat), the "  # type: ignore[attr-defined]
            f"job logs in {profile.log_directory or 'the submit directory'}, and the job "
            f"script (`scopeflow profiles --job-script NAME`)"
        ) from exc
