"""Execution backends for segmentation models: Ray actors or Dask workers, chosen by config.

Both backends load the model once per worker process and keep it there; frames go to the
workers through the backend's own transport (Ray object store, Dask scatter), never as Prefect
parameters or results. Call a backend from *inside* a Prefect task, for many frames at a time::

    with make_backend(BackendConfig(kind="ray", workers=2, model="classical")) as backend:
        labels = backend.segment(frames, pixel_size_um=0.65)

``ray`` / ``distributed`` are imported only when a backend is made, so importing
``tasks.inference`` stays light.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scopeflow import ConfigurationError, ScopeflowError

__all__ = [
    "BackendConfig",
    "BackendUnavailable",
    "InferenceBackend",
    "InferenceError",
    "InferenceFuture",
    "make_backend",
]

# ``segment(frames)`` sends at most this many frames per worker call, so a slow worker does
# not hold a large share of a batch and a GPU model still gets batches for segment_batch.
MAX_FRAMES_PER_CALL = 8


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


class BackendUnavailable(InferenceError):
    """The cluster at ``address`` cannot be reached, or the backend's package is missing."""


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


def make_backend(config: BackendConfig) -> InferenceBackend:
    """Check the model spec locally, then start or connect to the configured backend.

    Raises ConfigurationError for an unknown model (before any cluster work) and
    BackendUnavailable when ``config.address`` cannot be reached or the package is missing.
    """
    check_model_spec(config.model)
    if config.address is not None:
        check_reachable(config)
    try:
        if config.kind == "ray":
            from ._ray_backend import RayBackend as backend_class
        else:
            from ._dask_backend import DaskBackend as backend_class
    except ImportError as exc:
        package = "ray[default]" if config.kind == "ray" else "dask distributed"
        raise BackendUnavailable(
            f"the {config.kind} backend needs {package}: pip install {package} ({exc})",
            reason=str(exc),
        ) from exc
    return backend_class(config)


def check_model_spec(spec: str) -> None:
    """ConfigurationError unless ``spec`` is a registered name or an importable factory."""
    from ._registry import _import_factory, available_models

    names = available_models()
    if spec in names:
        return
    if ":" in spec:
        _import_factory(spec)
        return
    raise ConfigurationError(
        f"unknown model {spec!r}; available: {', '.join(names) or 'none'}; or give "
        "'package.module:factory' importable on every worker"
    )


_START_HINT = {
    "ray": "start one with `ray start --head --node-ip-address 127.0.0.1 --port 6379`, or "
    "leave address unset to start a local Ray cluster",
    "dask": "start one with `dask scheduler --host 127.0.0.1 --port 8786` and "
    "`dask worker tcp://127.0.0.1:8786`, or leave address unset to start a LocalCluster",
}


def check_reachable(config: BackendConfig) -> None:
    """Open (and close) a TCP connection to ``config.address``; BackendUnavailable if refused."""
    address = config.address
    assert address is not None
    if config.kind == "ray" and address in ("auto", "local"):
        return
    host, port = split_address(address, default_port=6379 if config.kind == "ray" else 8786)
    try:
        with socket.create_connection((host, port), timeout=config.connect_timeout_s):
            pass
    except OSError as exc:
        raise BackendUnavailable(
            f"cannot reach the {config.kind} cluster at {address!r} ({host}:{port}): {exc}; "
            f"{_START_HINT[config.kind]}",
            reason=str(exc),
        ) from exc


def split_address(address: str, *, default_port: int) -> tuple[str, int]:
    """'tcp://h:p', 'ray://h:p' or 'h:p' -> (host, port)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"backend address {address!r} has an invalid port") from exc
    if not parts.hostname:
        raise ConfigurationError(
            f"backend address {address!r} has no host; give 'host:port' or 'tcp://host:port'"
        )
    return parts.hostname, port or default_port


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


# --- worker side: shared by the Ray actor and the Dask worker plugin -------------------------

# model spec -> how many times this process loaded it (reported by info(); a test checks 1)
_loads_in_process: dict[str, int] = {}


class LoadedModel:
    """A model loaded in a worker process, with what ``info()`` reports about it."""

    def __init__(self, spec: str, options: dict[str, Any]) -> None:
        import os
        import time

        from ._registry import load_model

        started = time.perf_counter()
        self.spec = spec
        self.model = load_model(spec, **options)
        self.load_seconds = time.perf_counter() - started
        _loads_in_process[spec] = _loads_in_process.get(spec, 0) + 1
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.frames = 0

    def describe(self) -> dict[str, Any]:
        import os

        return {
            "pid": self.pid,
            "host": self.host,
            "model": getattr(self.model, "name", self.spec),
            "model_version": getattr(self.model, "version", None),
            "model_instance": id(self.model),
            "device": str(getattr(self.model, "device", "cpu")),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "loads_in_process": _loads_in_process.get(self.spec, 0),
            "load_seconds": round(self.load_seconds, 4),
            "frames": self.frames,
        }

    def run(
        self,
        frames: Sequence[Any],
        pixel_size_um: float | None,
        first_index: int | None,
        *,
        objects: bool = False,
    ) -> list[Any]:
        """Segment ``frames`` (segment_batch when the model has it); InferenceError on failure,
        naming the frame's index (``first_index`` + position). ``objects``: return each
        frame's ObjectTable (measured here, next to the frame) instead of its labels."""
        import time

        from ._measure import measure_objects

        frames = [self._resolve(f, first_index, i) for i, f in enumerate(frames)]
        started = time.perf_counter()
        labels = self._segment(frames, pixel_size_um, first_index)
        model_ms = (time.perf_counter() - started) * 1e3 / max(1, len(frames))
        if not objects:
            return labels
        return [
            measure_objects(lab, np.asarray(frame), model_ms=model_ms)
            for frame, lab in zip(frames, labels, strict=True)
        ]

    def _resolve(self, frame: Any, first_index: int | None, position: int) -> Any:
        """Pixels for a shared-memory frame reference (read here, on the worker); else as is."""
        load = getattr(frame, "load", None)
        if not callable(load):
            return frame
        try:
            return load()
        except LookupError as exc:
            index = None if first_index is None else first_index + position
            raise InferenceError(
                f"frame {index}: {exc} ({self._where()})", model=self.spec, frame_index=index
            ) from None

    def _segment(
        self, frames: Sequence[Any], pixel_size_um: float | None, first_index: int | None
    ) -> list[np.ndarray]:
        model = self.model
        batch = getattr(model, "segment_batch", None)
        if len(frames) > 1 and callable(batch):
            try:
                labels = list(batch(frames, pixel_size_um=pixel_size_um))
            except Exception as exc:
                raise model_failure(self.spec, first_index, exc, self._where()) from None
            if len(labels) != len(frames):
                raise InferenceError(
                    f"model {self.spec!r} segment_batch returned {len(labels)} label images "
                    f"for {len(frames)} frames",
                    model=self.spec,
                    frame_index=first_index,
                )
        else:
            labels = []
            for i, frame in enumerate(frames):
                index = None if first_index is None else first_index + i
                try:
                    labels.append(model.segment(frame, pixel_size_um=pixel_size_um))
                except Exception as exc:
                    raise model_failure(self.spec, index, exc, self._where()) from None
        out = []
        for i, (frame, lab) in enumerate(zip(frames, labels, strict=True)):
            lab = np.asarray(lab)
            if lab.shape != np.shape(frame):
                index = None if first_index is None else first_index + i
                raise InferenceError(
                    f"model {self.spec!r} returned labels of shape {lab.shape} for a frame of "
                    f"shape {np.shape(frame)} (frame {index}); labels must match the frame",
                    model=self.spec,
                    frame_index=index,
                )
            out.append(lab if lab.dtype == np.int32 else lab.astype(np.int32))
        self.frames += len(frames)
        return out

    def _where(self) -> str:
        return f"pid {self.pid} on {self.host}"
