"""Prefect stages for the batch flows: a task per step and per chunk batch (never per tile),
and a markdown artifact summarising the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from scopeflow import ChunksFailed
from tasks.storage import Tile

from ._dataset_work import TileDone

__all__ = ["PrefectStages", "run_id", "summary_artifact"]

T = TypeVar("T")


class PrefectStages:
    """Steps as Prefect tasks; chunk batches submitted together (threads), awaited together."""

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        result: T = task(name=name, task_run_name=name, cache_policy=NO_CACHE)(fn)(*args)
        return result

    def batches(
        self, name: str, fn: Callable[[list[Tile], int], list[TileDone]], batches: list[list[Tile]]
    ) -> list[list[TileDone] | BaseException]:
        batch_task = task(name=name, cache_policy=NO_CACHE, task_run_name=name + "-{number}")(fn)
        futures = [batch_task.submit(batch, number) for number, batch in enumerate(batches)]
        wait(futures)
        out: list[list[TileDone] | BaseException] = []
        for future in futures:
            try:
                out.append(future.result())
            except ChunksFailed as exc:
                out.append(exc)
        return out


def run_id() -> str:
    """This flow run's id."""
    from prefect.runtime import flow_run

    return str(flow_run.get_id())


def summary_artifact(key: str, title: str, rows: dict[str, Any]) -> None:
    """A two-column markdown table in the Prefect UI."""
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    create_markdown_artifact(key=key, markdown="\n".join(lines), description=title)
