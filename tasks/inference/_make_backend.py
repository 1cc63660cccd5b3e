"""``backend_for_profile`` and ``make_backend``: check the model spec (and the cluster's address)
here, then start the Ray or Dask backend (importing ``ray`` / ``distributed`` only then, so that
importing ``tasks.inference`` stays light).

``backend_for_profile`` is the door live loops share with the batch flows: any compute profile
(``local``, ``slurm``, ``pbs``, ``ray``; by name from the settings file, or a profile object)
becomes a live backend on the workers that profile describes. ``make_backend(BackendConfig)``
keeps serving callers that name an engine and an address themselves.

Both backends load the model once per worker process and keep it there; frames go to the
workers through the backend's own transport (Ray object store, Dask scatter), never as Prefect
parameters or results. Call a backend from *inside* a Prefect task, for many frames at a time::

    with backend_for_profile("local-ray", "classical", workers=2) as backend:
        labels = backend.segment(frames, pixel_size_um=0.65)
"""

from __future__ import annotations

import math
import socket
from typing import Any
from urllib.parse import urlsplit

from scopeflow import (
    ComputeProfile,
    ConfigurationError,
    JobqueueComputeProfile,
    LocalComputeProfile,
    RayComputeProfile,
    ScopeflowSettings,
)

from ._backend_core import BackendConfig, BackendUnavailable, InferenceBackend

__all__ = [
    "backend_for_profile",
    "check_model_spec",
    "check_reachable",
    "make_backend",
    "split_address",
]


def backend_for_profile(
    profile: ComputeProfile | str,
    model: str = "classical",
    model_options: dict[str, Any] | None = None,
    *,
    workers: int | None = None,
    settings: ScopeflowSettings | None = None,
) -> InferenceBackend:
    """A live inference backend on the workers a compute profile describes.

    ``profile``: a name from ``tasks.compute.available_profiles()`` (ConfigurationError listing
    the choices when unknown) or a profile object. ``local`` starts a Dask LocalCluster or a
    local Ray (its ``engine``); ``slurm`` / ``pbs`` submit the dask-jobqueue jobs the batch
    flows submit from the same profile (``tasks.compute.dask_cluster``), wait for the first
    worker, and cancel the jobs on ``close()``; ``ray`` connects to ``address`` (e.g. a KubeRay
    head) and leaves the cluster running. GPUs per worker come from the profile (Ray
    ``num_gpus``; Dask ``GPU`` resource, ``gpus / processes`` on a jobqueue profile).
    ``workers`` overrides the profile's count (actors, worker processes; a jobqueue profile
    submits enough jobs for them). BackendUnavailable when the cluster cannot be started or
    reached; ConfigurationError for an unknown model, before any cluster work.
    """
    if isinstance(profile, str):
        from tasks.compute import get_profile

        profile = get_profile(profile, settings)
    if workers is not None:
        profile = _with_workers(profile, workers)
    check_model_spec(model)
    config = _config_for(profile, model, dict(model_options or {}))
    return _backend_class(config.kind)(config, profile=profile)


def _with_workers(profile: ComputeProfile, workers: int) -> ComputeProfile:
    if workers < 1:
        raise ConfigurationError(f"workers must be at least 1, got {workers}")
    if isinstance(profile, JobqueueComputeProfile):
        return profile.model_copy(update={"jobs": math.ceil(workers / profile.processes)})
    return profile.model_copy(update={"workers": workers})


def _config_for(profile: ComputeProfile, model: str, options: dict[str, Any]) -> BackendConfig:
    """The BackendConfig (engine, workers, resources, timeouts) a profile amounts to."""
    common: dict[str, Any] = {"model": model, "model_options": options}
    if isinstance(profile, LocalComputeProfile):
        return BackendConfig(
            kind=profile.engine,
            workers=profile.workers,
            gpus_per_worker=profile.gpus_per_worker,
            **common,
        )
    if isinstance(profile, RayComputeProfile):
        return BackendConfig(
            kind="ray",
            address=profile.address,
            workers=profile.workers,
            cpus_per_worker=profile.cpus_per_worker,
            gpus_per_worker=profile.gpus_per_worker,
            connect_timeout_s=profile.connect_timeout_s,
            **common,
        )
    # slurm / pbs: Dask workers in batch jobs; the cluster is ours, started and stopped here
    return BackendConfig(
        kind="dask",
        workers=profile.jobs * profile.processes,
        gpus_per_worker=profile.gpus / profile.processes,
        startup_timeout_s=profile.startup_timeout_s,
        **common,
    )


def _backend_class(kind: str) -> Any:
    try:
        if kind == "ray":
            from ._ray_backend import RayBackend

            return RayBackend
        from ._dask_backend import DaskBackend

        return DaskBackend
    except ImportError as exc:
        package = "ray[default]" if kind == "ray" else "dask distributed"
        raise BackendUnavailable(
            f"the {kind} backend needs {package}: pip install {package} ({exc})",
            reason=str(exc),
        ) from exc


def make_backend(config: BackendConfig) -> InferenceBackend:
    """Check the model spec locally, then start or connect to the configured backend.

    Raises ConfigurationError for an unknown model (before any cluster work) and
    BackendUnavailable when ``config.address`` cannot be reached or the package is missing.
    """
    check_model_spec(config.model)
    if config.address is not None:
        check_reachable(config)
    return _backend_class(config.kind)(config)


def check_model_spec(spec: str) -> None:
    """ConfigurationError unless ``spec`` is a registered name or an importable factory."""
    from ._registry import _import_factory, available_models

    names = available_models()
    if spec in names:
        return
    if ":" in spec:
        _import_factory(spec)
        return
    raise ConfigurationError(
        f"unknown model {spec!r}; available: {', '.join(names) or 'none'}; or give "
        "'package.module:factory' importable on every worker"
    )


_START_HINT = {
    "ray": "start one with `ray start --head --node-ip-address 127.0.0.1 --port 6379`, or "
    "leave address unset to start a local Ray cluster",
    "dask": "start one with `dask scheduler --host 127.0.0.1 --port 8786` and "
    "`dask worker tcp://127.0.0.1:8786`, or leave address unset to start a LocalCluster",
}


def check_reachable(config: BackendConfig) -> None:
    """Open (and close) a TCP connection to ``config.address``; BackendUnavailable if refused."""
    address = config.address
    assert address is not None
    if config.kind == "ray" and address in ("auto", "local"):
        return
    host, port = split_address(address, default_port=6379 if config.kind == "ray" else 8786)
    try:
        with socket.create_connection((host, port), timeout=config.connect_timeout_s):
            pass
    except OSError as exc:
        raise BackendUnavailable(
            f"cannot reach the {config.kind} cluster at {address!r} ({host}:{port}): {exc}; "
            f"{_START_HINT[config.kind]}",
            reason=str(exc),
        ) from exc


def split_address(address: str, *, default_port: int) -> tuple[str, int]:
    """'tcp://h:p', 'ray://h:p' or 'h:p' -> (host, port)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"backend address {address!r} has an invalid port") from exc
    if not parts.hostname:
        raise ConfigurationError(
            f"backend address {address!r} has no host; give 'host:port' or 'tcp://host:port'"
        )
    return parts.hostname, port or default_port
