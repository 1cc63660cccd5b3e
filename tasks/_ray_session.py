"""Ray sessions shared by the streaming inference backend and the batch runner: starting one on
this machine with every server on 127.0.0.1, checking the cluster can place a worker, and
stopping the actors (and the session, when ours)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["lacking_resource", "start_local_ray", "stop_actors", "worker_pythonpath"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_local_ray(num_cpus: int) -> None:
    """``ray.init`` a local cluster bound to loopback only, with the repo root (and the
    caller's cwd) on the workers' path so that "package.module:factory" models import there."""
    import ray

    with _localhost_only():
        ray.init(
            num_cpus=num_cpus,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            ignore_reinit_error=False,
            log_to_driver=False,
            logging_level="WARNING",
            runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath()}},
        )


def worker_pythonpath() -> str:
    entries = [str(REPO_ROOT), os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(e for e in entries if e))


def lacking_resource(per_worker: dict[str, float]) -> tuple[str, float] | None:
    """The first resource (``"CPU"``, ``"GPU"``) of which one worker needs more than the whole
    connected cluster has, with what the cluster has; None when every worker can be placed."""
    import ray

    total = ray.cluster_resources()
    for name, amount in per_worker.items():
        if amount > 0 and total.get(name, 0.0) < amount:
            return name, total.get(name, 0.0)
    return None


def stop_actors(actors: Iterable[Any], *, shutdown: bool) -> None:
    """Kill ``actors`` (those already gone are skipped); with ``shutdown``, then stop Ray too
    (only for a session this process started)."""
    import ray
    from ray.exceptions import RayError

    if ray.is_initialized():
        for actor in actors:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(actor, no_restart=True)
    if shutdown and ray.is_initialized():
        ray.shutdown()


class _localhost_only:
    """Make ``ray.init`` keep 127.0.0.1 as the node address, so that every Ray server (GCS,
    raylet, workers, agents) binds to loopback only. Ray otherwise swaps 127.0.0.1 for the
    machine's routable address and listens on all interfaces.

    Ray has no public way to do this (checked on Ray 2.60): ``ray.init(_node_ip_address=...)``
    and ``ray start --node-ip-address`` both pass the address through
    ``services.resolve_ip_for_localhost``, which replaces a loopback address unless
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` is false. Its only public handle, the
    environment variable ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, is read once when Ray is first
    imported, which has happened long before a backend starts; so the constant is switched off
    for the duration of ``ray.init`` and restored afterwards.
    """

    def __enter__(self) -> None:
        from ray._private import ray_constants  # noqa: PLC2701 (no public API, see above)

        self._saved = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False

    def __exit__(self, *exc: object) -> None:
        from ray._private import ray_constants  # noqa: PLC2701 (no public API, see above)

        ray_constants.ENABLE_RAY_CLUSTER = self._saved
