"""The event-triggered goals of issue 14 on the deterministic in-process replay of the demo
(`flows._event_replay`): the flow's own detectors, policy and score on the same simulator, over
18 seeds (0-11, where the detectors were tuned, and 12-17, held out while tuning). The flow end
to end is tests/test_event_triggered_flow.py; its machine load moves its figures by a frame or
two, so the goal is judged here, where it cannot."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from flows import replay_event_seed

pytestmark = pytest.mark.heavy

SEEDS = range(18)
CAPTURED_GOAL = 0.90  # issue 14: >= 90 % of true events imaged at the fast rate
DOSE_GOAL = 0.30  # ... at <= 30 % of the always-fast protocol's light dose
MISS_REASONS = ("never fired", "fired, muted", "fast, ended early", "fast for another", "late")


@pytest.fixture(scope="module")
def replays() -> list[dict[str, Any]]:
    # spawned, not forked: a fork of this process (torch's and Ray's threads started by earlier
    # tests) can hang in the child
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(replay_event_seed, SEEDS))


def _figures(replays: list[dict[str, Any]]) -> list[tuple[int, int, int, float]]:
    return [(r["seed"], r["events_captured"], r["events_true"], r["dose_ratio"]) for r in replays]


def test_at_least_90_percent_of_true_events_are_imaged_at_the_fast_rate(
    replays: list[dict[str, Any]],
) -> None:
    """Over all 18 seeds (a static gentle protocol images none fast; always-fast all)."""
    true = sum(r["events_true"] for r in replays)
    captured = sum(r["events_captured"] for r in replays)
    assert true >= 2 * len(replays), _figures(replays)
    assert captured / true >= CAPTURED_GOAL, _figures(replays)


def test_the_light_dose_is_at_most_30_percent_of_always_fast_on_every_seed(
    replays: list[dict[str, Any]],
) -> None:
    assert all(0.0 < r["dose_ratio"] <= DOSE_GOAL for r in replays), _figures(replays)


def test_the_replay_is_deterministic_and_names_why_each_miss_was_missed(
    replays: list[dict[str, Any]],
) -> None:
    """What makes it a fair judge: the same seed gives the same figures in another process."""
    assert replay_event_seed(4) == replays[4]
    missed = [e for r in replays for e in r["events"] if not e["captured"]]
    assert all(e["why"].startswith(MISS_REASONS) for e in missed), missed
