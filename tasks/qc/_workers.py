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
from tasks._ray_session import RayCalls, start_local_ray

from ._metrics import MetricsRequest, measure_payload

__all__ = ["QCWorkers", "WorkerKind"]

_WARM_UP = np.zeros((64, 64), dtype=np.uint8)

WorkerKind = Literal["ray", "dask", "threads"]


class _Future:
    """One image's metrics: ``result(timeout)``, ``done()``. A Ray one waits through its
    workers' ``RayCalls`` and lets go of its ObjectRef there once answered."""

    def __init__(self, inner: Any, kind: WorkerKind, calls: RayCalls | None = None) -> None:
        self._inner = inner
        self._kind = kind
        self._calls = calls
        self._answered = False

    def done(self) -> bool:
        if self._calls is not None:
            return self._answered or self._calls.ready(self._inner)
        return bool(self._inner.done())

    def result(self, timeout: float | None = None) -> Any:
        if self._calls is not None:
            from ray.exceptions import GetTimeoutError

            try:
                value = self._calls.get(self._inner, timeout)
            except GetTimeoutError as exc:
                raise cf.TimeoutError(str(exc)) from None
            except BaseException:
                self._answer(self._calls)
                raise
            self._answer(self._calls)
            return value
        if self._kind == "dask":
            from distributed import TimeoutError as DaskTimeout

            try:
                return self._inner.result(timeout=timeout)
            except DaskTimeout as exc:
                raise cf.TimeoutError(str(exc)) from None
        return self._inner.result(timeout=timeout)

    def _answer(self, calls: RayCalls) -> None:
        self._answered = True
        calls.drop(self, "_inner")


class QCWorkers(Closeable):
    """``workers`` Ray CPUs / Dask worker processes / threads measuring images. ``address``:
    an existing Ray or Dask cluster to use (left running); None starts a local one on
    127.0.0.1 (stopped by ``close()``)."""

    def __init__(
        self,
        kind: WorkerKind = "threads",
        *,
        workers: int = 2,
        address: str | None = None,
        request: MetricsRequest | None = None,
        measure: Callable[..., Any] | None = None,
        measure_args: tuple[Any, ...] = (),
    ) -> None:
        """``measure``: another per-image measure, ``measure(payload, pixel_size_um,
        *measure_args)`` (a module-level function, so Ray and Dask can ship it; its result
        has ``model_ms``), instead of the QC metrics."""
        self.kind = kind
        self.workers = workers
        self.request = request or MetricsRequest()
        self.measure = measure
        self.measure_args = measure_args
        self.startup_s = 0.0
        started = time.perf_counter()
        self._own = address is None
        self._calls = RayCalls(lambda: RuntimeError("these QC workers are closed"))
        if kind == "ray":
            import ray

            if address is None:
                if not ray.is_initialized():
                    start_local_ray(workers)
                else:
                    self._own = False
            else:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            self._remote = ray.remote(num_cpus=1, max_retries=1)(measure or measure_payload)
            ray.get(self._remote.remote(*self._args(_WARM_UP, None)))  # workers up and imported
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
            self._client.submit(self._fn, *self._args(_WARM_UP, None), pure=False).result()
        elif kind == "threads":
            self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qc")
        else:
            raise ValueError(f"unknown QC worker kind {kind!r}; use 'ray', 'dask' or 'threads'")
        self.startup_s = time.perf_counter() - started

    def put(self, frame: Any) -> Any:
        if self.kind == "ray":
            import ray

            with self._calls.call():
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
        """The metrics of one image (the keyword arguments are the Analyzer's; only a custom
        ``measure`` gets the pixel size)."""
        del frame_index, objects
        args = self._args(frame_or_ref, pixel_size_um)
        if self.kind == "ray":
            with self._calls.call():
                return _Future(self._remote.remote(*args), "ray", self._calls)
        if self.kind == "dask":
            return _Future(self._client.submit(self._fn, *args, pure=False), "dask")
        return _Future(self._pool.submit(self._fn, *args), "threads")

    def measure_here(self, payload: Any, pixel_size_um: float | None = None) -> Any:
        return self._fn(*self._args(payload, pixel_size_um))

    @property
    def _fn(self) -> Callable[..., Any]:
        return self.measure or measure_payload

    def _args(self, payload: Any, pixel_size_um: float | None) -> tuple[Any, ...]:
        if self.measure is None:
            return (payload, self.request)
        return (payload, pixel_size_um, *self.measure_args)

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": self.workers, "startup_s": round(self.startup_s, 3)}

    def close(self) -> None:
        if self.kind == "ray":
            self._calls.close((), shutdown=self._own)
        elif self.kind == "dask":
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        else:
            self._pool.shutdown(wait=True, cancel_futures=True)
