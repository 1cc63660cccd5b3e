"""The Ray runner: one actor per worker (``num_cpus`` / ``num_gpus`` from the profile).

A ``local`` profile with ``engine = "ray"`` starts Ray on this machine with every server bound
to 127.0.0.1 and shuts it down on ``close()``; a ``ray`` profile connects to ``address`` (e.g. a
KubeRay head, ``ray://head:10001``) and leaves the cluster running. Each actor is a long-lived
worker process, so module-level model caches in the called function's module load once per
actor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from scopeflow import (
    Closeable,
    ComputeUnavailable,
    ConfigurationError,
    LocalComputeProfile,
    RayComputeProfile,
)
from tasks._ray_session import (
    connect_ray_cluster,
    lacking_resource,
    start_local_ray,
    stop_actors,
)

from ._runner_core import GroupFailure, MapOutcome

__all__ = ["RayRunner"]

IN_FLIGHT_PER_ACTOR = 2
ACTOR_START_TIMEOUT_S = 120.0


class _Worker:
    """A Ray actor that calls whatever function it is given, in its own long-lived process."""

    def call(self, fn: Callable[[list[Any]], list[Any]], group: list[Any]) -> list[Any]:
        return fn(group)

    def run(self, fn: Callable[[], Any]) -> Any:
        return fn()


class RayRunner(Closeable):
    """Groups dispatched to actors, at most IN_FLIGHT_PER_ACTOR queued on each."""

    def __init__(self, profile: LocalComputeProfile | RayComputeProfile) -> None:
        self.profile = profile
        self.started_ray = False
        self._closed = False
        if isinstance(profile, LocalComputeProfile):
            workers, cpus, gpus = profile.workers, 1.0, profile.gpus_per_worker
        else:
            workers, cpus, gpus = profile.workers, profile.cpus_per_worker, profile.gpus_per_worker
        self._cpus, self._gpus = cpus, gpus
        self._connect(workers * cpus)
        try:
            self._check_resources()
            self._actor_class = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0)(_Worker)
            self._actors = [self._actor_class.remote() for _ in range(workers)]
            self._wait_for_actors()
        except BaseException:
            self.close()
            raise

    def _connect(self, cpus_needed: float) -> None:
        if isinstance(self.profile, RayComputeProfile):
            connect_ray_cluster(self.profile)  # or the session already open, if the same cluster
            return
        if ray.is_initialized():  # a session someone else started: use it, never shut it down
            return
        start_local_ray(max(os.cpu_count() or 1, math.ceil(cpus_needed)))
        self.started_ray = True

    def _wait_for_actors(self) -> None:
        """Every actor placed and started, or a clear error (a cluster too small or too busy)."""
        try:
            ray.get([a.run.remote(os.getpid) for a in self._actors], timeout=ACTOR_START_TIMEOUT_S)
        except GetTimeoutError as exc:
            raise ComputeUnavailable(
                f"{len(self._actors)} Ray workers asking for CPU={self._cpus:g}, "
                f"GPU={self._gpus:g} each did not all start within {ACTOR_START_TIMEOUT_S:g} s; "
                f"the cluster has {_resources(ray.cluster_resources())}, free now "
                f"{_resources(ray.available_resources())}; lower `workers` in the compute "
                "profile, wait for other jobs to finish, or add nodes"
            ) from exc

    def _check_resources(self) -> None:
        need = {"CPU": self._cpus, "GPU": self._gpus}
        lacking = lacking_resource(need)
        if lacking is not None:
            name, have = lacking
            raise ConfigurationError(
                f"each Ray worker needs {name}={need[name]:g} but the cluster has {have:g}; "
                "lower it in the compute profile or add nodes"
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        actors, self._actors = getattr(self, "_actors", []), []
        stop_actors(actors, shutdown=self.started_ray)

    def worker_count(self) -> int:
        return len(self._actors)

    def map(
        self,
        fn: Callable[[list[Any]], list[Any]],
        groups: Sequence[list[Any]],
        *,
        on_done: Callable[[list[Any]], None] | None = None,
    ) -> MapOutcome:
        if self._closed:
            raise ComputeUnavailable("this runner is closed; open a new one with open_runner()")
        outcome = MapOutcome()
        todo: Iterator[list[Any]] = iter(groups)
        inflight: dict[Any, tuple[int, list[Any]]] = {}

        def feed(slot: int) -> None:
            group = next(todo, None)
            if group is not None:
                inflight[self._actors[slot].call.remote(fn, group)] = (slot, group)

        for slot in range(len(self._actors)):
            for _ in range(IN_FLIGHT_PER_ACTOR):
                feed(slot)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            slot, group = inflight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                outcome.failures.append(
                    GroupFailure(group, f"{type(cause).__name__}: {cause}", False)
                )
            except RayActorError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                outcome.failures.append(
                    GroupFailure(group, f"the Ray actor running it died ({first})", True)
                )
                self._replace(slot)
            else:
                outcome.results.append(result)
                if on_done is not None:
                    on_done(result)
            feed(slot)
        return outcome

    def _replace(self, slot: int) -> None:
        """A new actor for a dead one, so the remaining groups still have somewhere to run."""
        self._actors[slot] = self._actor_class.remote()

    def run_on_workers(self, fn: Callable[[], Any]) -> list[Any]:
        return list(ray.get([a.run.remote(fn) for a in self._actors], timeout=120))

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "ray",
            "profile_kind": self.profile.kind,
            "address": ray.get_runtime_context().gcs_address,
            "workers": len(self._actors),
            "num_cpus": self._cpus,
            "num_gpus": self._gpus,
        }


def _resources(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={resources.get(k, 0.0):g}" for k in ("CPU", "GPU"))
