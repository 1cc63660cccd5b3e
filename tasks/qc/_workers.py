"""Where QC metrics are computed: Ray tasks, Dask workers, or threads of this process.

``QCWorkers`` is a backend for the closed-loop core's ``Analyzer`` (``submit(payload)`` -> a
future of ``ImageMetrics``): the payload is a file reference, a shared-memory frame reference
or pixels, and the worker reads the pixels itself, so a file on a share is read where it is
measured. The metric code is pure numpy/scipy: a Ray task or a Dask task per image, no actor
state. ``threads`` runs it in this process (numpy and scipy's FFT release the GIL for most of
the work), for an edge PC without a cluster and for the local fallback.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from scopeflow import Closeable

from ._metrics import MetricsRequest, measure_payload

__all__ = ["QCWorkers", "WorkerKind"]

_WARM_UP = np.zeros((64, 64), dtype=np.uint8)

WorkerKind = Literal["ray", "dask", "threads"]


class _Future:
    """One image's metrics: ``result(timeout)``, ``done()``."""

    def __init__(self, inner: Any, kind: WorkerKind) -> None:
        self._inner = inner
        self._kind = kind

    def done(self) -> bool:
        if self._kind == "ray":
            import ray

            ready, _ = ray.wait([self._inner], timeout=0, fetch_local=False)
            return bool(ready)
        return bool(self._inner.done())

    def result(self, timeout: float | None = None) -> Any:
        if self._kind == "ray":
            import ray
            from ray.exceptions import GetTimeoutError

            try:
                return ray.get(self._inner, timeout=timeout)
            except GetTimeoutError as exc:
                raise cf.TimeoutError(str(exc)) from None
        if self._kind == "dask":
            from distributed import TimeoutError as DaskTimeout

            try:
                return self._inner.result(timeout=timeout)
            except DaskTimeout as exc:
                raise cf.TimeoutError(str(exc)) from None
        return self._inner.result(timeout=timeout)


class QCWorkers(Closeable):
    """``workers`` Ray CPUs / Dask worker processes / threads measuring images. ``address``:
    an existing Ray or Dask cluster to use (left running); None starts a local one on
    127.0.0.1 (stopped by ``close()``). ``measure(payload, request)``: what each worker
    computes (default: the QC metrics; ``measure_focus_payload``: an autofocus score), a
    module-level function so that Ray and Dask can ship it."""

    def __init__(
        self,
        kind: WorkerKind = "threads",
        *,
        workers: int = 2,
        address: str | None = None,
        request: MetricsRequest | None = None,
        measure: Callable[[Any, Any], Any] = measure_payload,
    ) -> None:
        self.kind = kind
        self.measure = measure
        self.workers = workers
        self.request = request or MetricsRequest()
        self.startup_s = 0.0
        started = time.perf_counter()
        self._own = address is None
        if kind == "ray":
            import ray

            from tasks._ray_session import start_local_ray

            if address is None:
                if not ray.is_initialized():
                    start_local_ray(workers)
                else:
                    self._own = False
            else:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            self._remote = ray.remote(num_cpus=1, max_retries=1)(measure)
            ray.get(self._remote.remote(_WARM_UP, self.request))  # workers up and imported
        elif kind == "dask":
            from distributed import Client, LocalCluster

            if address is None:
                self._cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
                self._client = Client(self._cluster)
            else:
                self._cluster = None
                self._client = Client(address)
            self._client.submit(measure, _WARM_UP, self.request, pure=False).result()
        elif kind == "threads":
            self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qc")
        else:
            raise ValueError(f"unknown QC worker kind {kind!r}; use 'ray', 'dask' or 'threads'")
        self.startup_s = time.perf_counter() - started

    def put(self, frame: Any) -> Any:
        if self.kind == "ray":
            import ray

            return ray.put(frame)
        if self.kind == "dask":
            return self._client.scatter(frame)
        return frame

    def submit(
        self,
        frame_or_ref: Any,
        *,
        pixel_size_um: float | None = None,
        frame_index: int | None = None,
        objects: bool = True,
    ) -> _Future:
        """The metrics of one image (the keyword arguments are the Analyzer's; unused)."""
        del pixel_size_um, frame_index, objects
        if self.kind == "ray":
            return _Future(self._remote.remote(frame_or_ref, self.request), "ray")
        if self.kind == "dask":
            return _Future(
                self._client.submit(self.measure, frame_or_ref, self.request, pure=False),
                "dask",
            )
        return _Future(self._pool.submit(self.measure, frame_or_ref, self.request), "threads")

    def measure_here(self, payload: Any) -> Any:
        return self.measure(payload, self.request)

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": self.workers, "startup_s": round(self.startup_s, 3)}

    def close(self) -> None:
        if self.kind == "ray":
            import ray

            if self._own and ray.is_initialized():
                ray.shutdown()
        elif self.kind == "dask":
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        else:
            self._pool.shutdown(wait=True, cancel_futures=True)
