"""A chunk runner: calls one function on groups of work items on a Dask or Ray cluster.

This module holds what both runners share and return (the protocol, outcomes, grouping); it
imports neither runner. ``open_runner`` (``_open_runner``) picks one.

Built only from the engines' own APIs (Dask futures, Ray actors); nothing here schedules.
``fn(items) -> results`` must be importable on the workers (a module-level function, or a
``functools.partial`` of one); module-level caches in its module live once per worker process,
which is how a model is loaded once per worker and kept.

Failures do not stop the other groups: ``map`` returns every result it got and one
:class:`GroupFailure` per group that failed, saying whether the worker running it died.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from scopeflow import ComputeProfile

__all__ = ["ChunkRunner", "GroupFailure", "MapOutcome", "group_items"]


@dataclass(frozen=True)
class GroupFailure:
    """One group of items that did not complete, and why."""

    items: list[Any]
    message: str
    worker_died: bool


@dataclass
class MapOutcome:
    """What ``map`` returns: the results of the groups that completed, and the failures."""

    results: list[Any] = field(default_factory=list)
    failures: list[GroupFailure] = field(default_factory=list)


@runtime_checkable
class ChunkRunner(Protocol):
    """What the Dask and Ray runners offer. Use as a context manager, or call ``close()``."""

    profile: ComputeProfile

    def worker_count(self) -> int:
        """Workers (Dask worker processes, Ray actors) currently connected."""
        ...

    def map(
        self,
        fn: Callable[[list[Any]], list[Any]],
        groups: Sequence[list[Any]],
        *,
        on_done: Callable[[list[Any]], None] | None = None,
    ) -> MapOutcome:
        """Run ``fn(group)`` for every group on the workers; ``on_done`` sees each result list
        as it arrives (in completion order)."""
        ...

    def run_on_workers(self, fn: Callable[[], Any]) -> list[Any]:
        """Call ``fn()`` once on every worker; the answers, one per worker."""
        ...

    def describe(self) -> dict[str, Any]:
        """Engine, address, worker count, profile kind: for logs and provenance."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> ChunkRunner: ...

    def __exit__(self, *exc: object) -> None: ...


def group_items(items: Sequence[Any], workers: int, *, max_group: int = 16) -> list[list[Any]]:
    """Contiguous groups, at least four per worker when there are enough items, at most
    ``max_group`` items each: fewer engine calls for many small tiles, still balanced."""
    n = len(items)
    if n == 0:
        return []
    size = max(1, min(max_group, math.ceil(n / (4 * max(1, workers)))))
    return [list(items[i : i + size]) for i in range(0, n, size)]
