"""Ray sessions shared by the streaming inference backend and the batch runner: starting one on
this machine with every server on 127.0.0.1, connecting to the cluster a ``ray`` compute profile
names (e.g. KubeRay), checking the cluster can place a worker, stopping the actors (and the
session, when ours), and keeping this process's threads out of Ray while it shuts down."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from scopeflow import ComputeUnavailable, RayComputeProfile

__all__ = [
    "RayCalls",
    "connect_ray_cluster",
    "lacking_resource",
    "start_local_ray",
    "stop_actors",
    "worker_pythonpath",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


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


def connect_ray_cluster(profile: RayComputeProfile) -> None:
    """Connect this process to the Ray cluster ``profile`` names (GCS ``host:6379`` or the Ray
    client's ``ray://host:10001``, as KubeRay is reached from outside Kubernetes), or keep the
    session already open when it is that cluster. ComputeUnavailable naming the fix when nothing
    listens there, Ray refuses (a wrong port, a missing token), or this process is connected to
    another cluster (work never lands on the wrong one)."""
    import ray
    from ray.exceptions import RayError

    if ray.is_initialized():  # a session someone else started: use it, never shut it down
        _check_same_cluster(profile)
        return
    failed = f"cannot connect to the Ray cluster at {profile.address!r}"
    try:
        _check_reachable(profile)
    except (OSError, ValueError) as exc:  # nothing listens there, or no address
        raise ComputeUnavailable(f"{failed}: {exc}; {_ADDRESS_HINT}") from exc
    try:
        ray.init(address=profile.address, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError, OSError, RayError) as exc:
        # something listens there but Ray refused: a wrong port, or a missing token
        raise ComputeUnavailable(f"{failed}: {exc}; {_ADDRESS_HINT}; {_TOKEN_HINT}") from exc


_ADDRESS_HINT = (
    "check the address (KubeRay: the head service, port 10001 for ray://), or use the "
    "'local-ray' profile"
)
_TOKEN_HINT = (
    "a cluster with token authentication (RAY_AUTH_MODE=token on its nodes) also needs "
    "RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH in this "
    "process's environment"
)


def _check_same_cluster(profile: RayComputeProfile) -> None:
    """Refuse to run a `ray` profile's work on another cluster this process is connected to."""
    import socket
    from urllib.parse import urlsplit

    import ray

    address = profile.address
    if address == "auto":
        return
    client = ray.util.client.ray.is_connected()
    if address.startswith("ray://"):
        if client:
            return
        current = f"the cluster at {ray.get_runtime_context().gcs_address}"
    else:
        if client:
            current = "a cluster through the Ray client (ray://)"
        else:
            gcs = ray.get_runtime_context().gcs_address

            def endpoint(addr: str) -> tuple[str, int | None]:
                parts = urlsplit(f"tcp://{addr}")
                return socket.gethostbyname(parts.hostname or "127.0.0.1"), parts.port or 6379

            try:
                if endpoint(address) == endpoint(gcs):
                    return
            except OSError:
                pass
            current = f"the cluster at {gcs}"
    raise ComputeUnavailable(
        f"cannot connect to the Ray cluster at {address!r}: this process is already connected "
        f"to {current}; run the flow in a fresh process (or call ray.shutdown() first)"
    )


def _check_reachable(profile: RayComputeProfile) -> None:
    """OSError within ``connect_timeout_s`` when nothing listens at the address."""
    import socket
    from urllib.parse import urlsplit

    if profile.address in ("auto", "local"):
        return
    address = profile.address
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    default = 10001 if address.startswith("ray://") else 6379
    with socket.create_connection(
        (parts.hostname or "127.0.0.1", parts.port or default), timeout=profile.connect_timeout_s
    ):
        pass


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


class RayCalls:
    """The Ray calls one owner (a backend, a pool of QC workers) makes from any thread, counted,
    so that shutting Ray down waits until none is running.

    A thread inside a Ray call while another thread runs ``ray.shutdown()`` ends the whole
    process: Ray's core worker quick-exits ("The core worker has already been shutdown ... The
    process will exit", ray-project/ray#19115). A waiter thread still blocked on a late result
    when its backend closes is such a thread. So every Ray call of the owner runs inside
    ``call()``; a blocking ``get`` waits in slices of ``SLICE_S``, each its own call; ``close``
    refuses new calls, waits for those running, and shuts Ray down holding the lock under which
    ``drop`` lets go of ObjectRefs (the last reference to one going away calls into Ray too).
    """

    SLICE_S = 0.2

    def __init__(self, closed_error: Callable[[], Exception]) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._closing = False
        self._closed_error = closed_error

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """One Ray call; raises the owner's closed error once it is closing."""
        with self._cond:
            if self._closing:
                raise self._closed_error()
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                self._cond.notify_all()

    def get(self, ref: Any, timeout: float | None = None) -> Any:
        """``ray.get(ref, timeout=timeout)`` in slices: Ray's ``GetTimeoutError`` after
        ``timeout``, the owner's closed error as soon as it closes."""
        import ray
        from ray.exceptions import GetTimeoutError

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait_s = self.SLICE_S if remaining is None else min(self.SLICE_S, remaining)
            with self.call():
                try:
                    return ray.get(ref, timeout=wait_s)
                except GetTimeoutError:
                    if remaining is not None and remaining <= self.SLICE_S:
                        raise

    def ready(self, ref: Any) -> bool:
        """Whether ``ref``'s value is there (a non-blocking ``ray.wait`` that fetches nothing)."""
        import ray

        with self.call():
            done, _ = ray.wait([ref], num_returns=1, timeout=0, fetch_local=False)
        return bool(done)

    def drop(self, holder: Any, *attributes: str) -> None:
        """``holder.attribute = None`` for each attribute, never while Ray is being shut down."""
        with self._cond:
            for attribute in attributes:
                setattr(holder, attribute, None)

    def close(self, actors: Iterable[Any], *, shutdown: bool, wait_s: float = 30.0) -> None:
        """Refuse new calls, kill ``actors`` (their callers' waits end), wait for the calls
        still running (at most ``wait_s``), then, with ``shutdown``, stop Ray. Calls still
        running after ``wait_s`` leave Ray running (it stops when the process exits)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
        stop_actors(actors, shutdown=False)
        with self._cond:
            idle = self._cond.wait_for(lambda: self._inside == 0, timeout=wait_s)
            if shutdown and not idle:
                log.warning(
                    "%d Ray call(s) still running after %.0f s: Ray is left running until this "
                    "process exits (shutting it down under a running call ends the process)",
                    self._inside,
                    wait_s,
                )
            stop_actors((), shutdown=shutdown and idle)


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
