"""The analyzer: a model on remote workers under a per-frame deadline, with a local fallback.

Frames go to an ``InferenceBackend`` (Ray actors or Dask workers: cluster GPUs, SLURM, KubeRay)
as references; a few numbers per object come back. Work in flight is bounded: when the
workers hold ``max_in_flight`` frames, a new frame is not queued behind them: it goes to the
local model when there is one, else it waits for a free slot (backpressure). A frame whose
remote result is not back by its deadline (counted from the moment the frame was ready at the
edge), or whose worker failed, is analysed by a small local model in this process, and the
analyzer switches to local mode (logged, counted). In local mode every frame still goes to the
workers as a probe while there is room; the first probe that comes back within its deadline
switches the analyzer back to remote.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tasks.inference import InferenceBackend, InferenceError, analyse_frame, load_model

from ._sources import LiveFrame

__all__ = ["Analysis", "Analyzer", "AnalyzerSettings", "ModeSwitch"]

log = logging.getLogger(__name__)

Where = Literal["remote", "local"]


@dataclass(frozen=True)
class AnalyzerSettings:
    """``deadline_ms``: frame ready -> result, after which the local model decides (None: wait
    for the workers, no fallback). ``fallback_model``: a registered model name (e.g. a cheap
    classical one), loaded in this process at start, so the first fallback is not slow."""

    deadline_ms: float | None = None
    max_in_flight: int = 4
    fallback_model: str | None = None
    fallback_options: dict[str, Any] = field(default_factory=dict)
    # an analysis that is not a segmentation (e.g. QC metrics): ``local(frame)`` gives the
    # frame's result in this process, used instead of ``fallback_model``; the result has a
    # ``model_ms`` attribute like the backend's
    local: Callable[[LiveFrame], Any] | None = None


@dataclass(frozen=True)
class Analysis:
    """One frame's result and how it was obtained (times: ``time.time_ns``)."""

    frame: LiveFrame
    result: Any
    where: Where
    submitted_ns: int
    done_ns: int
    model_ms: float
    remote_missed: bool = False  # the workers were asked and did not answer in time
    reason: str = ""
    waited_ms: float = 0.0  # on the workers, behind earlier frames (queueing, not the loop)


@dataclass(frozen=True)
class ModeSwitch:
    frame_index: int
    to: Where
    reason: str
    t_ns: int


@dataclass
class _Ticket:
    frame: LiveFrame
    submitted_ns: int
    remote: cf.Future[tuple[Any, int]] | None
    deadline_ns: int | None


class Analyzer:
    """``ticket = analyzer.submit(frame)`` (never blocks), then ``analyzer.wait(ticket)``."""

    def __init__(
        self,
        backend: InferenceBackend | None,
        settings: AnalyzerSettings | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings or AnalyzerSettings()
        if backend is None and self.settings.fallback_model is None and self.settings.local is None:
            raise ValueError("an analyzer needs a backend, a fallback_model (or local), or both")
        self.mode: Where = "remote" if backend is not None else "local"
        self.switches: list[ModeSwitch] = []
        self._in_flight = 0
        self._lock = threading.Condition()
        self._waiters = cf.ThreadPoolExecutor(
            max_workers=max(1, self.settings.max_in_flight), thread_name_prefix="analyzer"
        )
        self._fallback = (
            load_model(self.settings.fallback_model, **self.settings.fallback_options)
            if self.settings.fallback_model
            else None
        )
        self._recovered = threading.Event()
        self._workers = _worker_count(backend)
        self._warm = False
        self._done_remote: deque[int] = deque(maxlen=4 * max(1, self.settings.max_in_flight))

    @property
    def _has_local(self) -> bool:
        return self._fallback is not None or self.settings.local is not None

    # ------------------------------------------------------------------------------ work

    def submit(self, frame: LiveFrame) -> _Ticket:
        deadline = self.settings.deadline_ms
        deadline_ns = None if deadline is None else frame.header.t_ready_ns + int(deadline * 1e6)
        remote = None
        # without a fallback a full pipeline holds the frame (backpressure) instead of dropping it
        slot = self.backend is not None and self._take_slot(block=not self._has_local)
        now = time.time_ns()  # after any wait for a slot: that wait is the frame's queue time
        if slot:
            try:
                future = self.backend.submit(
                    frame.payload,
                    pixel_size_um=frame.header.pixel_size_um,
                    frame_index=frame.index,
                    objects=True,
                )
            except InferenceError as exc:
                self._release_slot()
                self._to_local(frame.index, f"submit failed: {exc}")
            else:
                remote = self._waiters.submit(self._await, future, deadline_ns)
        return _Ticket(frame, now, remote, deadline_ns)

    def ready(self, ticket: _Ticket) -> bool:
        """True when ``wait`` would not block on the workers."""
        if ticket.remote is None or self.mode == "local":
            return True
        if ticket.remote.done():
            return True
        return ticket.deadline_ns is not None and time.time_ns() >= ticket.deadline_ns

    def wait(self, ticket: _Ticket) -> Analysis:
        """The frame's analysis: remote if it comes in time, else the local model's."""
        frame = ticket.frame
        if self.mode == "local" and self._recovered.is_set():
            self._recovered.clear()
            self._to_remote(frame.index, "a probe came back within the deadline")
        if ticket.remote is not None and (self.mode == "remote" or ticket.remote.done()):
            timeout = None
            if ticket.deadline_ns is not None:
                timeout = max(0.0, (ticket.deadline_ns - time.time_ns()) / 1e9)
            try:
                result, done_ns = ticket.remote.result(timeout=timeout)
            except cf.TimeoutError:
                reason = f"no result within {self.settings.deadline_ms:g} ms of frame ready"
                return self._local(ticket, reason, missed=True)
            except InferenceError as exc:
                if not self._has_local:
                    raise
                return self._local(ticket, f"worker failed: {exc}", missed=True)
            if ticket.deadline_ns is not None and done_ns > ticket.deadline_ns:
                return self._local(ticket, "result came after the deadline", missed=True)
            if self.mode == "local":
                self._to_remote(frame.index, "a probe came back within the deadline")
            waited = self._waited_ms(ticket.submitted_ns)
            self._done_remote.append(done_ns)
            return Analysis(
                frame,
                result,
                "remote",
                ticket.submitted_ns,
                done_ns,
                result.model_ms,
                waited_ms=waited,
            )
        if self.mode == "remote" and self.backend is not None:
            reason = f"{self.settings.max_in_flight} frames already in flight on the workers"
            return self._local(ticket, reason, missed=True)
        return self._local(ticket, "local mode")

    def warm_up(self, shape: tuple[int, int], *, timeout_s: float = 60.0) -> float:
        """Before the loop: one camera-shaped frame through every worker and the local model,
        waited for. A model's first call (loading weights, first allocations: about a second
        for the U-Net on a fresh Ray worker) then does not push the run's first frames past
        their deadline to the fallback. Once per analyzer; returns the seconds it took. A
        worker that fails or has not answered in ``timeout_s`` is left to the loop, which falls
        back and logs it (nothing is raised here). Not for analyses of their own (``local``)."""
        if self._warm or self.settings.local is not None:
            return 0.0
        self._warm = True
        start = time.monotonic()
        frame = np.random.default_rng(0).integers(90, 110, size=shape, dtype=np.uint16)
        futures = []
        if self.backend is not None:
            for _ in range(self._workers):
                try:
                    futures.append(self.backend.submit(frame, objects=True))
                except InferenceError as exc:
                    log.warning("warm-up: a worker refused its frame (%s)", exc)
        if self._fallback is not None:
            analyse_frame(self._fallback, frame, pixel_size_um=None)
        for future in futures:
            left = max(0.0, timeout_s - (time.monotonic() - start))
            try:
                future.result(timeout=left)
            except (InferenceError, TimeoutError) as exc:  # cf.TimeoutError is TimeoutError
                log.warning("warm-up: a worker did not answer (%s)", exc or "timed out")
        took = time.monotonic() - start
        log.info("warm-up: %d worker(s) and the local model ready in %.1f s", len(futures), took)
        return took

    def close(self) -> None:
        self._waiters.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------ internals

    def _await(self, future: Any, deadline_ns: int | None) -> tuple[Any, int]:
        """On a waiter thread: the worker's answer and when it came (frees the slot)."""
        try:
            result = future.result(timeout=600)
            done_ns = time.time_ns()
        finally:
            self._release_slot()
        if self.mode == "local" and (deadline_ns is None or done_ns <= deadline_ns):
            self._recovered.set()
        return result, done_ns

    def _waited_ms(self, submitted_ns: int) -> float:
        """How long a frame waited on the workers behind earlier frames: from its submission
        until fewer earlier frames than workers were still running (frames are waited for in
        order, so every earlier remote result's time is known here)."""
        busy = sorted(t for t in self._done_remote if t > submitted_ns)
        if len(busy) < self._workers:
            return 0.0
        return (busy[len(busy) - self._workers] - submitted_ns) / 1e6

    def _local(self, ticket: _Ticket, reason: str, *, missed: bool = False) -> Analysis:
        frame = ticket.frame
        if self.settings.local is not None:
            if missed or (self.mode == "remote" and self.backend is not None):
                self._to_local(frame.index, reason)
            result = self.settings.local(frame)
            model_ms = float(getattr(result, "model_ms", 0.0))
            return Analysis(
                frame,
                result,
                "local",
                ticket.submitted_ns,
                time.time_ns(),
                model_ms,
                missed,
                reason,
            )
        if self._fallback is None:
            raise InferenceError(
                f"frame {frame.index}: {reason}, and no fallback_model is set; set "
                "AnalyzerSettings(fallback_model='classical') to decide locally on time",
                frame_index=frame.index,
            )
        if missed or (self.mode == "remote" and self.backend is not None):
            self._to_local(frame.index, reason)
        pixels = frame.pixels()
        result = analyse_frame(self._fallback, pixels, pixel_size_um=frame.header.pixel_size_um)
        model_ms = result.model_ms
        return Analysis(
            frame, result, "local", ticket.submitted_ns, time.time_ns(), model_ms, missed, reason
        )

    def _to_local(self, index: int, reason: str) -> None:
        if self.mode != "local":
            self.mode = "local"
            self.switches.append(ModeSwitch(index, "local", reason, time.time_ns()))
            log.warning("frame %d: analysis falls back to the local model (%s)", index, reason)

    def _to_remote(self, index: int, reason: str) -> None:
        if self.mode != "remote":
            self.mode = "remote"
            self.switches.append(ModeSwitch(index, "remote", reason, time.time_ns()))
            log.warning("frame %d: analysis back on the remote workers (%s)", index, reason)

    def _take_slot(self, *, block: bool) -> bool:
        with self._lock:
            while self._in_flight >= self.settings.max_in_flight:
                if not block:
                    return False
                self._lock.wait()
            self._in_flight += 1
            return True

    def _release_slot(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify()


def _worker_count(backend: object | None) -> int:
    """How many workers serve ``backend``: an inference backend's ``config.workers``, or the
    ``workers`` of another analysis (QC metrics)."""
    if backend is None:
        return 1
    config = getattr(backend, "config", None)
    if config is not None:
        return config.workers
    return int(getattr(backend, "workers", 1))
