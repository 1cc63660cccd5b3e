"""Starting a Ray session on this machine with every server on 127.0.0.1 (shared by the
streaming inference backend and the batch runner)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["start_local_ray", "worker_pythonpath"]

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


class _localhost_only:
    """Make ``ray.init`` keep 127.0.0.1 as the node address, so that every Ray server (GCS,
    raylet, workers, agents) binds to loopback only. Ray otherwise swaps 127.0.0.1 for the
    machine's routable address and listens on all interfaces."""

    def __enter__(self) -> None:
        from ray._private import ray_constants

        self._saved = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False

    def __exit__(self, *exc: object) -> None:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = self._saved
