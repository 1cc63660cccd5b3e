"""Ray backend: ``workers`` actors, each loading the model once in ``__init__``.

Imported only by ``make_backend`` / ``backend_for_profile`` (it imports ray). A local cluster
(no ``address``; a ``local`` profile with engine ray) is started with every Ray server bound to
127.0.0.1 and is shut down by ``close()``; an existing Ray session or a cluster at ``address``
is only connected to, and left running. A ``ray`` compute profile connects as the batch runner
does (``tasks._ray_session.connect_ray_cluster``: reachability, token and wrong-cluster checks).

Dispatch is least-loaded: each frame (or chunk) goes to the actor with the fewest submissions
still running, ties in turn; finished ones are counted off with a non-blocking ``ray.wait``.
A slow actor (a busy GPU, a node under load) so gets fewer frames instead of every n-th one.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from scopeflow import ComputeProfile, ComputeUnavailable, ConfigurationError, RayComputeProfile
from tasks._ray_session import (
    RayCalls,
    connect_ray_cluster,
    lacking_resource,
    start_local_ray,
)

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

__all__ = ["ModelActor", "RayBackend", "RayFuture"]


class ModelActor:
    """One Ray actor: loads the model once, then segments the frames sent to it."""

    def __init__(self, spec: str, options: dict[str, Any]) -> None:
        self._loaded = LoadedModel(spec, options)

    def segment(
        self,
        frame: np.ndarray,
        pixel_size_um: float | None,
        index: int | None,
        objects: bool = False,
    ) -> Any:
        return self._loaded.run([frame], pixel_size_um, index, objects=objects)[0]

    def segment_many(
        self,
        frames: list[Any],
        pixel_size_um: float | None,
        first_index: int,
        objects: bool = False,
    ) -> list[Any]:
        # refs nested in a list are not resolved by Ray; fetch them here
        frames = [ray.get(f) if isinstance(f, ray.ObjectRef) else f for f in frames]
        return self._loaded.run(frames, pixel_size_um, first_index, objects=objects)

    def describe(self) -> dict[str, Any]:
        return self._loaded.describe()


class RayFuture:
    """A frame submitted to one actor; ``result()`` raises InferenceError on failure.

    Once ``result()`` has answered (a value or an error), the future lets go of its ObjectRef
    and actor handle through the backend's ``RayCalls`` (see there: a waiter thread may hold
    the last reference while the backend shuts Ray down)."""

    def __init__(
        self, backend: RayBackend, slot: int, actor: Any, ref: Any, frame_index: int | None
    ) -> None:
        self._backend = backend
        self._slot = slot
        self._actor = actor
        self.ref = ref
        self.frame_index = frame_index
        self._answered = False

    def done(self) -> bool:
        return self._answered or self._backend.calls.ready(self.ref)

    def result(self, timeout: float | None = None) -> Any:
        try:
            value = self._backend.calls.get(self.ref, timeout)
        except GetTimeoutError as exc:
            raise TimeoutError(
                f"frame {self.frame_index} not segmented within {timeout} s on Ray actor "
                f"{self._slot}"
            ) from exc
        except RayError as exc:
            actor = self._actor
            self._answer()
            raise self._failure(exc, actor) from None
        except BaseException:
            self._answer()
            raise
        self._answer()
        return value

    def _answer(self) -> None:
        self._answered = True
        self._backend.calls.drop(self, "ref", "_actor")

    def _failure(self, exc: RayError, actor: Any) -> InferenceError:
        model = self._backend.config.model
        if isinstance(exc, RayTaskError):
            if isinstance(exc.cause, InferenceError):
                return raised_here(exc.cause)
            return model_failure(model, self.frame_index, exc.cause or exc, "Ray actor")
        if isinstance(exc, RayActorError):
            return self._backend.actor_died(self._slot, actor, self.frame_index, exc)
        return InferenceError(
            f"Ray failed to segment frame {self.frame_index} with model {model!r}: "
            f"{type(exc).__name__}: {exc}",
            model=model,
            frame_index=self.frame_index,
            reason=str(exc),
        )


class RayBackend(BackendBase):
    """``workers`` ModelActor actors, least-loaded dispatch, the model loaded once per actor.

    ``profile``: the ``local`` (engine ray) or ``ray`` compute profile it was made from
    (``backend_for_profile``), or None for a plain BackendConfig.
    """

    def __init__(self, config: BackendConfig, *, profile: ComputeProfile | None = None) -> None:
        super().__init__(config)
        self.profile = profile
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._running: list[list[Any]] = []  # per actor slot: refs submitted, not yet done
        self._closed = False
        self.calls = RayCalls(self._closed_error)
        self.restarts = 0
        self.started_cluster = False
        self._start([("cluster", self._connect), ("actors", self._start_actors)])

    # --- lifecycle ---------------------------------------------------------------------------

    def _connect(self) -> None:
        config = self.config
        if isinstance(self.profile, RayComputeProfile):
            try:
                connect_ray_cluster(self.profile)
            except ComputeUnavailable as exc:
                raise BackendUnavailable(str(exc), reason=str(exc)) from exc
            return
        if ray.is_initialized():
            return  # someone else's session (or ours from another backend): use, never stop
        if config.address is not None:
            try:
                ray.init(
                    address=config.address,
                    log_to_driver=False,
                    logging_level="WARNING",
                    ignore_reinit_error=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BackendUnavailable(
                    f"cannot connect to the Ray cluster at {config.address!r}: {exc}; start one "
                    "with `ray start --head`, or leave address unset for a local cluster",
                    reason=str(exc),
                ) from exc
            return
        num_cpus = max(os.cpu_count() or 1, math.ceil(config.workers * config.cpus_per_worker))
        start_local_ray(num_cpus)
        self.started_cluster = True

    def _start_actors(self) -> None:
        config = self.config
        self._check_resources()
        self._actor_class = ray.remote(
            num_cpus=config.cpus_per_worker,
            num_gpus=config.gpus_per_worker,
            max_restarts=0,
            max_concurrency=1,
        )(ModelActor)
        self._actors = [self._new_actor() for _ in range(config.workers)]
        self._running = [[] for _ in self._actors]
        self._wait_ready(self._actors)

    def _check_resources(self) -> None:
        need = {"CPU": self.config.cpus_per_worker, "GPU": self.config.gpus_per_worker}
        lacking = lacking_resource(need)
        if lacking is not None:
            name, have = lacking
            raise ConfigurationError(
                f"each Ray actor needs {name}={need[name]} but the cluster has {have}; lower "
                f"{name.lower()}s_per_worker or add nodes with {name}s"
            )

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.config.model, dict(self.config.model_options))

    def _wait_ready(self, actors: list[Any]) -> list[dict[str, Any]]:
        refs = [a.describe.remote() for a in actors]
        try:
            return ray.get(refs, timeout=self.config.startup_timeout_s)
        except GetTimeoutError as exc:
            raise InferenceError(
                f"{len(actors)} Ray actor(s) for model {self.config.model!r} not ready within "
                f"{self.config.startup_timeout_s} s; available resources: "
                f"{ray.available_resources()}; raise startup_timeout_s or free resources",
                model=self.config.model,
            ) from exc
        except RayActorError as exc:
            raise InferenceError(
                f"model {self.config.model!r} could not be loaded in a Ray actor: {exc}; make "
                "sure it is registered or importable ('package.module:factory') on every node",
                model=self.config.model,
                reason=str(exc),
            ) from None

    def close(self) -> None:
        """Kill this backend's actors; shut Ray down only when this backend started it, once
        no thread is inside a call of this backend any more (``RayCalls``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            actors, self._actors = getattr(self, "_actors", []), []
        self.calls.close(actors, shutdown=self.started_cluster)

    # --- work --------------------------------------------------------------------------------

    def put(self, frame: np.ndarray) -> Any:
        """``ray.put`` the frame once; submit the returned ObjectRef as often as needed."""
        with self.calls.call():
            return ray.put(frame)

    def submit(
        self,
        frame_or_ref: Any,
        *,
        pixel_size_um: float | None = None,
        frame_index: int | None = None,
        objects: bool = False,
    ) -> RayFuture:
        """One frame to the actor with the fewest submissions still running."""
        index = self._frame_index(frame_index)
        slot, actor, ref = self._dispatch(
            lambda actor: actor.segment.remote(frame_or_ref, pixel_size_um, index, objects)
        )
        return RayFuture(self, slot, actor, ref, index)

    def _submit_chunk(
        self, frames: list[Any], pixel_size_um: float | None, first_index: int, objects: bool
    ) -> RayFuture:
        """Chunks go to the least-loaded actors too (in turn, when all are idle)."""
        slot, actor, ref = self._dispatch(
            lambda actor: actor.segment_many.remote(frames, pixel_size_um, first_index, objects)
        )
        return RayFuture(self, slot, actor, ref, first_index)

    def _worker_count(self) -> int:
        return self.config.workers

    def info(self) -> dict[str, Any]:
        with self._lock:
            actors = list(self._actors)
        with self.calls.call():
            workers = self._wait_ready(actors)
            gcs_address = ray.get_runtime_context().gcs_address
        first = workers[0] if workers else {}
        return {
            "kind": "ray",
            "address": self.config.address,
            "gcs_address": gcs_address,
            "started_cluster": self.started_cluster,
            "profile_kind": self.profile.kind if self.profile is not None else None,
            "workers": len(actors),
            "model": first.get("model", self.config.model),
            "model_spec": self.config.model,
            "model_version": first.get("model_version"),
            "restarts": self.restarts,
            "in_flight": self.in_flight(),
            "startup_seconds": dict(self.startup_seconds),
            "per_worker": workers,
        }

    # --- internals ---------------------------------------------------------------------------

    @staticmethod
    def _closed_error() -> InferenceError:
        return InferenceError("this Ray backend is closed; make a new one with make_backend()")

    def in_flight(self) -> list[int]:
        """Per actor: submissions sent and not finished yet."""
        with self.calls.call(), self._lock:
            self._count_off_finished()
            return [len(refs) for refs in self._running]

    def _dispatch(self, call: Any) -> tuple[int, Any, Any]:
        """``call(actor)`` on the actor with the fewest submissions running (ties in turn)."""
        with self.calls.call(), self._lock:
            self._count_off_finished()
            n = len(self._actors)
            start = next(self._counter) % n
            slot = min(((start + k) % n for k in range(n)), key=lambda s: len(self._running[s]))
            actor = self._actors[slot]
            ref = call(actor)
            self._running[slot].append(ref)
        return slot, actor, ref

    def _count_off_finished(self) -> None:
        """Drop finished submissions from the per-actor counts (holding ``_lock``): one
        non-blocking ``ray.wait`` that fetches nothing."""
        pending = [ref for refs in self._running for ref in refs]
        if not pending:
            return
        done, _ = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
        if done:
            finished = set(done)
            self._running = [[r for r in refs if r not in finished] for refs in self._running]

    def actor_died(
        self, slot: int, actor: Any, frame_index: int | None, exc: BaseException
    ) -> WorkerLost:
        """Replace the dead actor (once) and describe what died."""
        replaced = False
        with self._lock:
            if not self._closed and slot < len(self._actors) and self._actors[slot] is actor:
                with self.calls.call():
                    self._actors[slot] = self._new_actor()
                self._running[slot] = []  # the dead actor's submissions all fail
                self.restarts += 1
                replaced = True
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        then = (
            "a new actor was started for later frames"
            if replaced or not self._closed
            else "the backend is closed"
        )
        return WorkerLost(
            f"Ray actor {slot} running model {self.config.model!r} died while segmenting frame "
            f"{frame_index} ({type(exc).__name__}: {first_line}); {then}",
            model=self.config.model,
            frame_index=frame_index,
            reason=str(exc),
        )
