"""One batch operation on a stored image, whichever it is (segmentation, restoration): plan,
tiles on the workers (resuming from the ledger), the operation's finishing steps, a summary;
and the same run as a Prefect flow on a compute profile's cluster with a summary artifact.

``segment_dataset`` and ``restore_dataset`` are this with their own :class:`DatasetOperation`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from tasks.compute import ChunkRunner, get_profile, open_runner
from tasks.storage import ChunkLedger, Tile

from ._dataset_params import DatasetParams
from ._dataset_prefect import PrefectStages, run_id, summary_artifact
from ._dataset_run import INLINE, Stages, log, run_tiles
from ._dataset_work import TileDone

__all__ = ["DatasetOperation", "DatasetPlan", "run_operation", "run_operation_on"]


class DatasetPlan(Protocol):
    """What an operation's plan tells the shared steps: the tiles, those left, their ledger and
    the worker-side context, and whether an earlier run already finished the output."""

    @property
    def tiles(self) -> list[Tile]: ...

    @property
    def pending(self) -> list[Tile]: ...

    @property
    def ledger(self) -> ChunkLedger: ...

    @property
    def context(self) -> Any: ...

    @property
    def complete(self) -> bool: ...


P = TypeVar("P", bound=DatasetParams)
Plan = TypeVar("Plan", bound=DatasetPlan)


@dataclass(frozen=True)
class DatasetOperation(Generic[P, Plan]):
    """What differs between the batch operations; :func:`run_operation_on` does the rest.

    ``name`` names the plan step (``plan-<name>``) and the flow's artifact title; ``done_key``
    is the summary's count of tiles processed in this run; ``tile_work(context, tiles, number)``
    runs on the workers; ``finish(runner, stages, plan, params, run)`` runs the operation's
    last steps and returns the summary; ``complete_summary(plan, params)`` is the summary (and
    log line) when the output was complete already.
    """

    name: str
    flow_name: str
    chunk_task: str
    done_key: str
    plan: Callable[[P], Plan]
    tile_work: Callable[..., list[TileDone]]
    finish: Callable[[ChunkRunner, Stages, Plan, P, dict[str, Any]], dict[str, Any]]
    complete_summary: Callable[[Plan, P], tuple[str, dict[str, Any]]]
    artifact_keys: Sequence[str]


def run_operation_on(
    operation: DatasetOperation[P, Plan],
    runner: ChunkRunner,
    params: P,
    *,
    stages: Stages = INLINE,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``operation`` on ``params.image`` with an open runner; returns the summary."""
    started = time.perf_counter()
    run = dict(run or {"run_id": uuid.uuid4().hex}, compute=runner.describe())
    plan = stages.step(f"plan-{operation.name}", operation.plan, params)
    if plan.complete:
        message, summary = operation.complete_summary(plan, params)
        log().info("%s", message)
        return summary
    done = run_tiles(
        runner,
        partial(operation.tile_work, plan.context),
        plan.pending,
        total=len(plan.tiles),
        tiles_per_task=params.tiles_per_task,
        stages=stages,
        ledger=plan.ledger,
        task_name=operation.chunk_task,
    )
    summary = operation.finish(runner, stages, plan, params, run)
    summary.update(
        {
            operation.done_key: len(done),
            "skipped": len(plan.tiles) - len(plan.pending),
            "complete_already": False,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return summary


def run_operation(operation: DatasetOperation[P, Plan], params: P) -> dict[str, Any]:
    """The flow's body: ``operation`` on the cluster of ``params.profile``, each step a Prefect
    task, then a summary artifact."""
    with open_runner(get_profile(params.profile)) as runner:
        summary = run_operation_on(
            operation,
            runner,
            params,
            stages=PrefectStages(),
            run={"run_id": run_id(), "profile": params.profile},
        )
    summary_artifact(
        operation.flow_name,
        f"{operation.name.capitalize()} of {params.image.name}",
        {k: summary.get(k) for k in operation.artifact_keys},
    )
    return summary
