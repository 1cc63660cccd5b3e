"""``make_backend``: check the model spec and the cluster's address here, then start the Ray or
Dask backend the config names (importing ``ray`` / ``distributed`` only then, so that importing
``tasks.inference`` stays light).

Both backends load the model once per worker process and keep it there; frames go to the
workers through the backend's own transport (Ray object store, Dask scatter), never as Prefect
parameters or results. Call a backend from *inside* a Prefect task, for many frames at a time::

    with make_backend(BackendConfig(kind="ray", workers=2, model="classical")) as backend:
        labels = backend.segment(frames, pixel_size_um=0.65)
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from scopeflow import ConfigurationError

from ._backend_core import BackendConfig, BackendUnavailable, InferenceBackend

__all__ = ["check_model_spec", "check_reachable", "make_backend", "split_address"]


def make_backend(config: BackendConfig) -> InferenceBackend:
    """Check the model spec locally, then start or connect to the configured backend.

    Raises ConfigurationError for an unknown model (before any cluster work) and
    BackendUnavailable when ``config.address`` cannot be reached or the package is missing.
    """
    check_model_spec(config.model)
    if config.address is not None:
        check_reachable(config)
    try:
        if config.kind == "ray":
            from ._ray_backend import RayBackend as backend_class
        else:
            from ._dask_backend import DaskBackend as backend_class
    except ImportError as exc:
        package = "ray[default]" if config.kind == "ray" else "dask distributed"
        raise BackendUnavailable(
            f"the {config.kind} backend needs {package}: pip install {package} ({exc})",
            reason=str(exc),
        ) from exc
    return backend_class(config)


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
