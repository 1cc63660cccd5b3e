"""The Dask runner: a LocalCluster, or dask-jobqueue batch jobs, driven through a Client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, as_completed
from distributed.scheduler import KilledWorker

from scopeflow import Closeable, ComputeUnavailable, JobqueueComputeProfile, LocalComputeProfile

from ._dask_clusters import dask_cluster, gpus_per_dask_worker, wait_for_first_worker
from ._runner_core import GroupFailure, MapOutcome

__all__ = ["DaskRunner"]

# with work pending and no worker connected for this long, the remaining groups fail
NO_WORKER_GRACE_S = 60.0
LOST = (
    f"no Dask worker left for {NO_WORKER_GRACE_S:g} s (batch jobs ended: walltime, preemption "
    "or scancel?); re-run to resume from the finished chunks"
)


class DaskRunner(Closeable):
    """Dask futures for groups of items; GPU tasks ask for the workers' ``GPU`` resource."""

    def __init__(self, profile: LocalComputeProfile | JobqueueComputeProfile) -> None:
        self.profile = profile
        self.cluster: Any = None
        self.client: Client | None = None
        self._closed = False
        gpus = gpus_per_dask_worker(profile)
        self._resources = {"GPU": gpus} if gpus > 0 else None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.cluster = dask_cluster(self.profile)
        self.client = Client(self.cluster, set_as_default=False)
        wait_for_first_worker(self.client, self.profile)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def _client(self) -> Client:
        if self._closed or self.client is None:
            raise ComputeUnavailable("this runner is closed; open a new one with open_runner()")
        return self.client

    def worker_count(self) -> int:
        return len(self._client().scheduler_info(n_workers=-1)["workers"])

    def map(
        self,
        fn: Callable[[list[Any]], list[Any]],
        groups: Sequence[list[Any]],
        *,
        on_done: Callable[[list[Any]], None] | None = None,
    ) -> MapOutcome:
        client = self._client()
        futures = {
            client.submit(fn, group, pure=False, resources=self._resources): group
            for group in groups
        }
        outcome = MapOutcome()
        lost = threading.Event()
        stop = threading.Event()
        watchdog = threading.Thread(
            target=self._watch_workers, args=(list(futures), lost, stop), daemon=True
        )
        watchdog.start()
        try:
            for batch in as_completed(futures, loop=client.loop).batches():
                for future in batch:
                    if lost.is_set() and future.cancelled():
                        outcome.failures.append(GroupFailure(futures[future], LOST, True))
                    else:
                        self._collect(future, futures[future], outcome, on_done)
        finally:
            stop.set()
        return outcome

    def _watch_workers(
        self, futures: list[Any], lost: threading.Event, stop: threading.Event
    ) -> None:
        """Cancel what is left when no worker has been connected for NO_WORKER_GRACE_S."""
        since: float | None = None
        while not stop.wait(2.0):
            try:
                workers = self.worker_count()
            except Exception:  # the client is closing
                return
            if workers > 0:
                since = None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since > NO_WORKER_GRACE_S:
                lost.set()
                self._client().cancel([f for f in futures if not f.done()])
                return

    @staticmethod
    def _collect(
        future: Any,
        group: list[Any],
        outcome: MapOutcome,
        on_done: Callable[[list[Any]], None] | None,
    ) -> None:
        try:
            result = future.result()
        except KilledWorker as exc:
            outcome.failures.append(
                GroupFailure(group, f"the Dask workers running it died ({exc})", True)
            )
            return
        except Exception as exc:
            outcome.failures.append(GroupFailure(group, f"{type(exc).__name__}: {exc}", False))
            return
        outcome.results.append(result)
        if on_done is not None:
            on_done(result)

    def run_on_workers(self, fn: Callable[[], Any]) -> list[Any]:
        return list(self._client().run(fn).values())

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "dask",
            "profile_kind": self.profile.kind,
            "scheduler": self._client().scheduler.address,
            "workers": self.worker_count(),
            "gpu_resource": self._resources,
        }
