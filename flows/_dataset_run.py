"""The steps both batch flows share: split tiles into Prefect-task batches, run each batch on
the runner, report progress, and turn failed chunks into one clear error.

``Stages`` decides how a step runs: ``INLINE`` calls it directly (library use, benchmarks), the
flows pass ``PrefectStages`` (a Prefect task per step and per chunk batch, batches submitted
together so the cluster stays busy across batch boundaries).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

from scopeflow import ChunksFailed
from tasks.compute import ChunkRunner, group_items
from tasks.storage import ChunkLedger, Tile

from ._dataset_work import TileDone

__all__ = ["INLINE", "Progress", "Stages", "log", "run_tiles", "split_batches"]

T = TypeVar("T")
TARGET_TASKS = 16


def log() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger inside Prefect, this module's logger otherwise."""
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError
    except ImportError:  # pragma: no cover - prefect is a dependency of the flows extra
        return logging.getLogger("scopeflow.batch")
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("scopeflow.batch")


class Stages(Protocol):
    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T: ...

    def batches(
        self, name: str, fn: Callable[[list[Tile], int], list[TileDone]], batches: list[list[Tile]]
    ) -> list[list[TileDone] | BaseException]: ...


class _Inline:
    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def batches(
        self, name: str, fn: Callable[[list[Tile], int], list[TileDone]], batches: list[list[Tile]]
    ) -> list[list[TileDone] | BaseException]:
        out: list[list[TileDone] | BaseException] = []
        for number, batch in enumerate(batches):
            try:
                out.append(fn(batch, number))
            except ChunksFailed as exc:
                out.append(exc)
        return out


INLINE: Stages = _Inline()


def split_batches(tiles: Sequence[Tile], tiles_per_task: int | None) -> list[list[Tile]]:
    """About TARGET_TASKS batches (one Prefect task each), or ``tiles_per_task`` tiles each."""
    if not tiles:
        return []
    size = tiles_per_task or max(1, math.ceil(len(tiles) / TARGET_TASKS))
    return [list(tiles[i : i + size]) for i in range(0, len(tiles), size)]


class Progress:
    """Tiles finished out of the total, logged at most every ``every_s`` seconds."""

    def __init__(self, total: int, already: int, what: str, every_s: float = 5.0) -> None:
        self.total, self.done, self.what = total, already, what
        self.every_s = every_s
        self._started = time.perf_counter()
        self._last = 0.0
        self._new = 0
        self._lock = threading.Lock()

    def add(self, results: list[Any]) -> None:
        with self._lock:
            self.done += len(results)
            self._new += len(results)
            now = time.perf_counter()
            if now - self._last < self.every_s and self.done < self.total:
                return
            self._last = now
            rate = self._new / max(1e-9, now - self._started)
            done, total = self.done, self.total
        log().info("%s: %d/%d tiles (%.1f tiles/s)", self.what, done, total, rate)


def _run_batch(
    runner: ChunkRunner,
    fn: Callable[[list[Tile]], list[TileDone]],
    progress: Progress,
    batches: int,
    tiles: list[Tile],
    number: int,
) -> list[TileDone]:
    """One Prefect task's worth: groups of tiles on the runner; ChunksFailed when any failed."""
    groups = group_items(tiles, max(1, runner.worker_count()))
    outcome = runner.map(fn, groups, on_done=progress.add)
    done = [d for result in outcome.results for d in result]
    if outcome.failures:
        failed = [t.key for f in outcome.failures for t in f.items]
        first = outcome.failures[0]
        died = any(f.worker_died for f in outcome.failures)
        raise ChunksFailed(
            f"batch {number + 1}/{batches}: {len(failed)} of {len(tiles)} tiles failed "
            f"(first: {failed[0]}: {first.message})"
            + ("; a worker died (out of memory? job killed?)" if died else ""),
            failed=failed,
            done=len(done),
            total=len(tiles),
        )
    return done


def run_tiles(
    runner: ChunkRunner,
    fn: Callable[[list[Tile]], list[TileDone]],
    pending: Sequence[Tile],
    *,
    total: int,
    tiles_per_task: int | None,
    stages: Stages,
    task_name: str,
    ledger: ChunkLedger,
) -> list[TileDone]:
    """Every pending tile through ``fn`` on the runner, in Prefect-task batches.

    Raises ChunksFailed naming the failed tiles and how many are done; done tiles stay in the
    ledger, so the same call resumes.
    """
    batches = split_batches(pending, tiles_per_task)
    progress = Progress(total, total - len(pending), task_name)
    log().info(
        "%s: %d of %d tiles to do (%d already done), %d batches on %s",
        task_name,
        len(pending),
        total,
        total - len(pending),
        len(batches),
        runner.describe(),
    )
    batch_fn = partial(_run_batch, runner, fn, progress, len(batches))
    results = stages.batches(task_name, batch_fn, batches)
    done: list[TileDone] = []
    errors: list[ChunksFailed] = []
    for result in results:
        if isinstance(result, ChunksFailed):
            errors.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            done.extend(result)
    if errors:
        # a group that died part-way has its first tiles in the ledger: count from there
        recorded = ledger.done_keys()
        failed = [key for e in errors for key in e.failed if key not in recorded]
        finished = len(recorded)
        raise ChunksFailed(
            f"{task_name}: {len(failed)} of {total} tiles failed, {finished} are done and kept; "
            f"fix the cause and re-run the same command to resume. {errors[0]}",
            failed=failed,
            done=finished,
            total=total,
        )
    return done
