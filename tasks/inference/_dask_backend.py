"""Dask backend: a ``WorkerPlugin`` loads the model once per worker process; tasks use it.

Imported only by ``make_backend`` / ``backend_for_profile`` (it imports distributed). A compute
profile (``local``, ``slurm``, ``pbs``) starts its cluster with ``tasks.compute.dask_cluster``,
as the batch runner does: a ``LocalCluster`` of single-threaded worker processes on 127.0.0.1
(no dashboard), or dask-jobqueue batch jobs; ``close()`` closes it (cancelling the jobs). A
``BackendConfig`` without ``address`` is the ``local`` profile with its ``workers`` and GPUs;
with an ``address`` the backend only connects, and on ``close()`` removes its plugin (and so
the model) from the workers and disconnects.

Where a frame runs is the scheduler's choice, and ``submit`` relies on it for least-loaded
dispatch: a task with no dependencies (a frame under SCATTER_BYTES, which travels inside the
task, or a shared-memory reference) goes to the idle worker with the least occupancy (ties
round-robin; ``Scheduler.decide_worker_non_rootish`` / ``decide_worker_rootish_queuing_enabled``
in distributed). A frame scattered first (``put``, or ``submit`` of one of SCATTER_BYTES or
more) pulls its task to the worker holding it (scatter places frames round-robin); work stealing
then moves the task to an idle worker when sending the frame costs less than waiting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from typing import Any

import numpy as np
from distributed import Client, Future, WorkerPlugin, get_worker
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from scopeflow import (
    ComputeProfile,
    ComputeUnavailable,
    JobqueueComputeProfile,
    LocalComputeProfile,
)
from tasks.compute import dask_cluster, wait_for_first_worker

from ._backend_core import (
    BackendBase,
    BackendConfig,
    BackendUnavailable,
    InferenceError,
    WorkerLost,
    model_failure,
    raised_here,
)
from ._loaded_model import LoadedModel

__all__ = ["DaskBackend", "DaskFuture", "ModelPlugin"]

# ``submit`` scatters frames at least this large to a worker first (measured: an 8 MiB frame
# round trip takes about half as long scattered as embedded in the task)
SCATTER_BYTES = 1 << 20

# models loaded lazily by a task on a worker that has no plugin (yet): spec key -> model
_fallback_models: dict[str, LoadedModel] = {}
_fallback_lock = threading.Lock()


class ModelPlugin(WorkerPlugin):
    """Loads the model when attached to a worker (now, and on every worker that joins or is
    restarted later) and drops it when removed."""

    def __init__(self, name: str, spec: str, options: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.options = options
        self.loaded: LoadedModel | None = None

    def setup(self, worker: Any) -> None:
        self.loaded = LoadedModel(self.spec, self.options)

    def teardown(self, worker: Any) -> None:
        self.loaded = None


def _loaded(
    plugin_name: str, spec: str, options: dict[str, Any], worker: Any = None
) -> LoadedModel:
    worker = worker if worker is not None else get_worker()
    plugin = worker.plugins.get(plugin_name)
    if isinstance(plugin, ModelPlugin) and plugin.loaded is not None:
        return plugin.loaded
    with _fallback_lock:  # a worker that raced the plugin registration
        if plugin_name not in _fallback_models:
            _fallback_models[plugin_name] = LoadedModel(spec, options)
        return _fallback_models[plugin_name]


def segment_task(
    frames: Any,
    pixel_size_um: float | None,
    first_index: int | None,
    plugin_name: str,
    spec: str,
    options: dict[str, Any],
    objects: bool = False,
) -> Any:
    """Runs on a worker: one frame (returns labels) or a list (returns a list of labels);
    ObjectTables instead of labels with ``objects``."""
    loaded = _loaded(plugin_name, spec, options)
    if isinstance(frames, list):
        return loaded.run(frames, pixel_size_um, first_index or 0, objects=objects)
    return loaded.run([frames], pixel_size_um, first_index, objects=objects)[0]


def describe_worker(
    plugin_name: str, spec: str, options: dict[str, Any], dask_worker: Any = None
) -> dict[str, Any]:
    """Runs on every worker via ``Client.run`` (which passes ``dask_worker``)."""
    return _loaded(plugin_name, spec, options, dask_worker).describe()


class DaskFuture:
    """A frame submitted to the cluster; ``result()`` raises InferenceError on failure."""

    def __init__(self, backend: DaskBackend, future: Future, frame_index: int | None) -> None:
        self._backend = backend
        self.future = future
        self.frame_index = frame_index

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> Any:
        model = self._backend.config.model
        try:
            return self.future.result(timeout=timeout)
        except InferenceError as exc:
            raise raised_here(exc) from None
        except TimeoutError:
            raise TimeoutError(
                f"frame {self.frame_index} not segmented within {timeout} s by Dask"
            ) from None
        except (FutureCancelledError, KilledWorker) as exc:
            raise WorkerLost(
                f"Dask lost frame {self.frame_index} for model {model!r}: "
                f"{type(exc).__name__}: {exc}; the workers running it died (or its scattered "
                "input was on a worker that died); submit the frame again",
                model=model,
                frame_index=self.frame_index,
                reason=str(exc),
            ) from None
        except Exception as exc:
            raise model_failure(model, self.frame_index, exc, "Dask worker") from None


class DaskBackend(BackendBase):
    """Tasks on a Dask cluster; the model lives in a ModelPlugin on every worker.

    ``profile``: the ``local`` / ``slurm`` / ``pbs`` compute profile whose cluster this backend
    starts (``backend_for_profile``); None with a ``config.address`` to connect to.
    """

    def __init__(self, config: BackendConfig, *, profile: ComputeProfile | None = None) -> None:
        super().__init__(config)
        if profile is not None and not isinstance(
            profile, LocalComputeProfile | JobqueueComputeProfile
        ):
            raise ValueError(f"a {profile.kind!r} profile does not start a Dask cluster")
        self.profile = profile
        self.cluster: Any = None
        self.client: Client | None = None
        self._closed = False
        self._options = dict(config.model_options)
        digest = hashlib.sha1(
            json.dumps([config.model, self._options], sort_keys=True, default=repr).encode()
        ).hexdigest()[:12]
        # unique per backend, so that closing one backend never removes another's model
        self.plugin_name = f"scopeflow-model-{digest}-{uuid.uuid4().hex[:8]}"
        self._resources = {"GPU": config.gpus_per_worker} if config.gpus_per_worker > 0 else None
        self._start([("cluster", self._connect), ("model", self._load_model)])

    # --- lifecycle ---------------------------------------------------------------------------

    def _connect(self) -> None:
        config = self.config
        profile = self.profile
        if profile is None and config.address is None:
            profile = LocalComputeProfile(
                engine="dask", workers=config.workers, gpus_per_worker=config.gpus_per_worker
            )
        if profile is not None:
            try:
                self.cluster = dask_cluster(profile)
                # results straight from the worker, not relayed through the scheduler
                self.client = Client(self.cluster, set_as_default=False, direct_to_workers=True)
                wait_for_first_worker(self.client, profile)
            except ComputeUnavailable as exc:
                raise BackendUnavailable(str(exc), reason=str(exc)) from exc
            return
        try:
            self.client = Client(
                config.address, timeout=config.connect_timeout_s, set_as_default=False
            )
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot connect to the Dask scheduler at {config.address!r}: {exc}; start one "
                "with `dask scheduler` and `dask worker <address>`, or leave address unset for "
                "a LocalCluster",
                reason=str(exc),
            ) from exc
        try:
            self.client.wait_for_workers(1, timeout=config.startup_timeout_s)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"the Dask scheduler at {config.address!r} has no workers after "
                f"{config.startup_timeout_s} s; start some with `dask worker {config.address}`",
            ) from exc

    def _load_model(self) -> None:
        assert self.client is not None
        plugin = ModelPlugin(self.plugin_name, self.config.model, self._options)
        try:
            self.client.register_plugin(plugin, name=self.plugin_name)
        except Exception as exc:
            raise InferenceError(
                f"model {self.config.model!r} could not be loaded on the Dask workers: "
                f"{type(exc).__name__}: {exc}; make sure it is registered or importable "
                "('package.module:factory') on every worker",
                model=self.config.model,
                reason=str(exc),
            ) from exc

    def close(self) -> None:
        """Disconnect; close the cluster when this backend started it (a LocalCluster's
        workers stop, a jobqueue cluster's batch jobs are cancelled)."""
        if self._closed:
            return
        self._closed = True
        client, cluster = self.client, self.cluster
        if client is not None:
            if cluster is None:  # a shared cluster: take our model off its workers
                with contextlib.suppress(Exception):  # best effort on a cluster not ours
                    client.unregister_worker_plugin(self.plugin_name)
            client.close()
        if cluster is not None:
            cluster.close()

    @property
    def address(self) -> str:
        """The scheduler's address (of the cluster when this backend started one)."""
        return self._client().scheduler.address

    # --- work --------------------------------------------------------------------------------

    def put(self, frame: np.ndarray) -> Future:
        """Scatter the frame straight to a worker; submit the returned Future many times."""
        return self._client().scatter(frame, direct=True)

    def submit(
        self,
        frame_or_ref: Any,
        *,
        pixel_size_um: float | None = None,
        frame_index: int | None = None,
        objects: bool = False,
    ) -> DaskFuture:
        """One frame as one task; the scheduler sends it to the least busy worker (see the
        module's docstring for scattered frames)."""
        index = self._frame_index(frame_index)
        if isinstance(frame_or_ref, np.ndarray) and frame_or_ref.nbytes >= SCATTER_BYTES:
            # one hop straight to a worker, instead of inside the task via the scheduler
            frame_or_ref = self.put(frame_or_ref)
        return self._submit_task(frame_or_ref, pixel_size_um, index, objects)

    def _submit_chunk(
        self, frames: list[Any], pixel_size_um: float | None, first_index: int, objects: bool
    ) -> DaskFuture:
        """The scheduler places each chunk on a worker."""
        return self._submit_task(frames, pixel_size_um, first_index, objects)

    def _submit_task(
        self, frames: Any, pixel_size_um: float | None, first_index: int, objects: bool
    ) -> DaskFuture:
        future = self._client().submit(
            segment_task,
            frames,
            pixel_size_um,
            first_index,
            self.plugin_name,
            self.config.model,
            self._options,
            objects,
            pure=False,
            resources=self._resources,
        )
        return DaskFuture(self, future, first_index)

    def info(self) -> dict[str, Any]:
        client = self._client()
        per_worker = client.run(describe_worker, self.plugin_name, self.config.model, self._options)
        workers = [dict(d, address=addr) for addr, d in sorted(per_worker.items())]
        first = workers[0] if workers else {}
        return {
            "kind": "dask",
            "address": self.config.address,
            "scheduler_address": client.scheduler.address,
            "started_cluster": self.cluster is not None,
            "profile_kind": self.profile.kind if self.profile is not None else None,
            "workers": len(workers),
            "model": first.get("model", self.config.model),
            "model_spec": self.config.model,
            "model_version": first.get("model_version"),
            "startup_seconds": dict(self.startup_seconds),
            "per_worker": workers,
        }

    # --- internals ---------------------------------------------------------------------------

    def _client(self) -> Client:
        if self._closed or self.client is None:
            raise InferenceError("this Dask backend is closed; make a new one with make_backend()")
        return self.client

    def _worker_count(self) -> int:
        """Workers connected now (at least 1, so that ``segment`` always makes a chunk)."""
        return len(self._client().scheduler_info(n_workers=-1)["workers"]) or 1
