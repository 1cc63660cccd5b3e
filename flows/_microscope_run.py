"""One run on one microscope: its id and folder, the edge, the lease held for the run's whole
length (one run controls the microscope at a time: its tasks' clients speak for the lease),
and what the run opens on the way (workers), closed with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from tasks.hardware import EdgeClient
from tasks.inference import InferenceBackend

from ._live_analysis import LiveAnalysis, open_backend

__all__ = ["MicroscopeRun", "microscope_run"]

T = TypeVar("T")


class RunParams(Protocol):
    """What a flow's parameters give for a run: the edge and where the run's data goes."""

    @property
    def output_dir(self) -> Path: ...
    @property
    def lease_ttl_s(self) -> float: ...

    def connect(self) -> EdgeClient: ...


@dataclass(frozen=True)
class MicroscopeRun:
    run_id: str
    run_dir: Path
    edge: EdgeClient
    _stack: contextlib.ExitStack

    def keep(self, resource: AbstractContextManager[T]) -> T:
        """``resource`` entered, to be closed when the run ends."""
        return self._stack.enter_context(resource)

    def open_backend(self, params: LiveAnalysis) -> InferenceBackend | None:
        """The live analysis' workers (None: this process analyses), closed with the run."""
        backend = open_backend(params)
        return None if backend is None else self.keep(backend)


@contextlib.contextmanager
def microscope_run(params: RunParams, run_id: str) -> Iterator[MicroscopeRun]:
    """Make the run's folder, connect, lease the microscope for the run; release all at the end."""
    run_dir = params.output_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        edge = stack.enter_context(params.connect())
        stack.enter_context(edge.lease(holder=run_id, ttl_s=params.lease_ttl_s))
        yield MicroscopeRun(run_id, run_dir, edge, stack)
