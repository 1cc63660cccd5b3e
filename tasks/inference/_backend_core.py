"""What the Ray and Dask backends share, and what their users see: the config, the errors, the
backend and future protocols, and the base class that starts a backend and spreads ``segment``
over its workers.

Imported by both backends and by ``make_backend``; it imports neither.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scopeflow import Closeable, ComputeUnavailable, ScopeflowError

__all__ = [
    "MAX_FRAMES_PER_CALL",
    "BackendBase",
    "BackendConfig",
    "BackendUnavailable",
    "InferenceBackend",
    "InferenceError",
    "InferenceFuture",
    "WorkerLost",
    "chunk_indices",
    "model_failure",
    "raised_here",
]

# ``segment(frames)`` sends at most this many frames per worker call, so a slow worker does
# not hold a large share of a batch and a GPU model still gets batches for segment_batch.
MAX_FRAMES_PER_CALL = 8
# ``segment`` submits a chunk again this often when the worker running it died
LOST_RETRIES = 2


class BackendConfig(BaseModel):
    """Which backend runs the model, where, with how many workers, and which model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ray", "dask"] = Field(
        "ray", description="execution backend: 'ray' (an actor per worker) or 'dask' (workers)"
    )
    address: str | None = Field(
        None,
        description=(
            "cluster to connect to: Ray 'host:port', 'ray://host:port' or 'auto'; Dask "
            "'tcp://host:port'. None starts a local cluster bound to 127.0.0.1 and stops it on "
            "close()"
        ),
    )
    workers: int = Field(1, ge=1, description="Ray actors, or Dask worker processes, to run")
    gpus_per_worker: float = Field(
        0.0,
        ge=0.0,
        description=(
            "GPUs each worker needs: Ray num_gpus per actor; Dask worker/task resource {'GPU': n}"
        ),
    )
    cpus_per_worker: float = Field(
        1.0, gt=0.0, description="CPUs each worker needs (Ray num_cpus per actor)"
    )
    model: str = Field(
        "classical",
        min_length=1,
        description="registered model name, or 'package.module:factory' importable on workers",
    )
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options passed to the model factory"
    )
    connect_timeout_s: float = Field(
        10.0, gt=0.0, description="seconds to wait when connecting to a cluster at 'address'"
    )
    startup_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description="seconds to wait for every worker to load the model before giving up",
    )

    def local(self) -> bool:
        """True when the backend starts (and later stops) its own local cluster."""
        return self.address is None


class InferenceError(ScopeflowError):
    """A frame could not be segmented: the model raised, or the worker running it died.

    ``model`` is the model spec, ``frame_index`` the frame's index (in the batch given to
    ``segment``, or the submission counter for ``submit``), ``reason`` the original message.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        frame_index: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.frame_index = frame_index
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), str(self), self.model, self.frame_index, self.reason))


class WorkerLost(InferenceError):
    """The worker running a frame died (a killed Ray actor, a lost Dask worker): the frame
    itself is fine and can be submitted again (``segment`` does, ``LOST_RETRIES`` times)."""


class BackendUnavailable(InferenceError, ComputeUnavailable):
    """The cluster at ``address`` (or the one a compute profile names) cannot be reached or
    started, or the backend's package is missing. Also a ComputeUnavailable, the batch runners'
    error for the same trouble."""


def _rebuild_error(
    cls: type[InferenceError],
    message: str,
    model: str | None,
    frame_index: int | None,
    reason: str | None,
) -> InferenceError:
    return cls(message, model=model, frame_index=frame_index, reason=reason)


@runtime_checkable
class InferenceFuture(Protocol):
    """One submitted frame. ``result`` returns its int32 labels (or, when submitted with
    ``objects=True``, its ObjectTable) or raises InferenceError."""

    def result(self, timeout: float | None = None) -> Any: ...

    def done(self) -> bool: ...


@runtime_checkable
class InferenceBackend(Protocol):
    """What both backends offer. Use as a context manager, or call ``close()``."""

    config: BackendConfig

    def put(self, frame: np.ndarray) -> Any:
        """Move ``frame`` to the cluster once; pass the returned ref to ``submit`` (many times)."""
        ...

    def submit(
        self,
        frame_or_ref: Any,
        *,
        pixel_size_um: float | None = None,
        frame_index: int | None = None,
        objects: bool = False,
    ) -> InferenceFuture:
        """Segment one frame asynchronously: an array, a ref from ``put``, or a shared-memory
        reference from ``EdgeClient.shm_ref`` (workers on the edge's host read the pixels from
        the edge's ring themselves; a few bytes travel instead of the frame).

        ``objects=True``: the worker measures the objects and sends back their ObjectTable
        (a few numbers per object, with the model's own time) instead of the label image.
        """
        ...

    def segment(
        self,
        frames: Sequence[np.ndarray],
        *,
        pixel_size_um: float | None = None,
        objects: bool = False,
    ) -> list[Any]:
        """Segment many frames, balanced over the workers; results in the order given
        (label images, or ObjectTables with ``objects=True``)."""
        ...

    def info(self) -> dict[str, Any]:
        """Backend kind, address, worker count, model name/version, and one entry per worker."""
        ...

    def close(self) -> None:
        """Stop the workers, and the cluster if this backend started it."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def chunk_indices(n: int, workers: int, max_per_call: int = MAX_FRAMES_PER_CALL) -> list[range]:
    """Split ``range(n)`` into contiguous, nearly equal chunks: at least one per worker (when
    there are enough frames) and at most ``max_per_call`` frames each."""
    if n <= 0:
        return []
    count = max(math.ceil(n / max_per_call), min(n, max(1, workers)))
    base, extra = divmod(n, count)
    chunks, start = [], 0
    for i in range(count):
        stop = start + base + (1 if i < extra else 0)
        chunks.append(range(start, stop))
        start = stop
    return chunks


def model_failure(
    model: str, frame_index: int | None, exc: BaseException, where: str
) -> InferenceError:
    """The InferenceError for a model that raised ``exc`` on a frame."""
    reason = f"{type(exc).__name__}: {exc}"
    frame = "a frame" if frame_index is None else f"frame {frame_index}"
    return InferenceError(
        f"model {model!r} failed on {frame} ({where}): {reason}",
        model=model,
        frame_index=frame_index,
        reason=reason,
    )


def raised_here(exc: InferenceError) -> InferenceError:
    """A fresh copy of an InferenceError a worker raised, to raise in this process without the
    worker's traceback."""
    return type(exc)(str(exc), model=exc.model, frame_index=exc.frame_index, reason=exc.reason)


class BackendBase(Closeable):
    """The halves the Ray and Dask backends share: a timed startup that closes what it started
    when a step fails, submission counters, and ``segment`` as chunks spread over the workers.

    A backend implements ``_submit_chunk`` (one worker call for a list of frames) and
    ``_worker_count``, plus the rest of InferenceBackend.
    """

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.startup_seconds: dict[str, float] = {}
        self._submitted = itertools.count()

    def _start(self, steps: Sequence[tuple[str, Callable[[], None]]]) -> None:
        """Run each ``(name, step)`` in turn, timing it into ``startup_seconds[name]``; on any
        failure close the backend (stopping what was started) and re-raise."""
        try:
            for name, step in steps:
                started = time.perf_counter()
                step()
                self.startup_seconds[name] = time.perf_counter() - started
        except BaseException:
            self.close()
            raise

    def _frame_index(self, frame_index: int | None) -> int:
        """The index a submitted frame is reported under: the caller's, else the next count."""
        return next(self._submitted) if frame_index is None else frame_index

    def segment(
        self, frames: Sequence[Any], *, pixel_size_um: float | None = None, objects: bool = False
    ) -> list[Any]:
        """Segment ``frames`` in chunks spread over the workers, results in the order given."""

        def submit(chunk: range) -> InferenceFuture:
            return self._submit_chunk(
                [frames[i] for i in chunk], pixel_size_um, chunk.start, objects
            )

        chunks = chunk_indices(len(frames), self._worker_count())
        futures = [submit(chunk) for chunk in chunks]
        out: list[Any] = []
        for chunk, future in zip(chunks, futures, strict=True):
            for attempt in range(LOST_RETRIES + 1):
                try:
                    out.extend(future.result())
                    break
                except WorkerLost:  # its worker died: the chunk goes to a live one
                    if attempt == LOST_RETRIES:
                        raise
                    future = submit(chunk)
        return out

    def _submit_chunk(
        self, frames: list[Any], pixel_size_um: float | None, first_index: int, objects: bool
    ) -> InferenceFuture:
        raise NotImplementedError

    def _worker_count(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
