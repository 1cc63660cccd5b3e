"""Issue 14's uncertainty goal judged on a deterministic replay: the pure carry-forward policy
(the flow's own, with its calibrated threshold and run limit) over simulated time-lapses
rendered in-process at the demo's 2 simulated minutes between time points, the virtual stain
on every brightfield frame and the flow's reference model (``classical-candidates``) on every
DAPI frame, as in the flow. The static protocol is scored on the very same frames (DAPI at
every time point), so the accuracy difference is the policy's alone, with none of the
run-to-run noise of two live runs; seeds 0-5 (the threshold, flicker weight and run limit were
calibrated on seeds 10-17; seeds 0 and 2 were looked at only to diagnose failures, README:
Uncertainty-triggered). Measured: 61/61/53/53/64/50 % fewer DAPI acquisitions at
-0.0/-0.3/+0.2/+1.0/+2.0/+0.0 points of nuclei F1 (seed 5 saves exactly half). The flow end to
end, whose pace and figures move with the machine's load, is
tests/test_uncertainty_triggered_flow.py.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

# about 2 minutes on two cores; several times that when other work loads them
pytestmark = [pytest.mark.heavy, pytest.mark.timeout(900)]

SEEDS = (0, 1, 2, 3, 4, 5)
POSITIONS, TIME_POINTS, STEP_S = 6, 6, 120.0  # the demo: 6 positions x 6 time points, 2 min
REDUCTION_GOAL = 0.5  # issue 14: >= 50 % fewer expensive acquisitions...
TOLERANCE = 0.01  # ... at equal accuracy: nuclei F1 at most 1 point below static


def _replay_seed(seed: int) -> dict[str, Any]:
    from tasks.decisions import (
        CARRY_FORWARD_FLICKER_WEIGHT,
        CARRY_FORWARD_MAX_RUN,
        CARRY_FORWARD_THRESHOLD,
    )
    from tasks.training.calibrate_carry_forward import replay, static_f1, timelapses

    lapses = timelapses(seed, POSITIONS, TIME_POINTS, STEP_S)
    run = replay(
        lapses,
        CARRY_FORWARD_THRESHOLD,
        CARRY_FORWARD_MAX_RUN,
        6.5 / 20.0,
        CARRY_FORWARD_FLICKER_WEIGHT,
    )
    static = static_f1(lapses)
    return {
        "seed": seed,
        "reduction": round(1 - run["acquired"] / run["frames"], 4),
        "f1_delta": round(run["f1"] - static, 4),
        "frames": run["frames"],
    }


@pytest.fixture(scope="module")
def replays() -> list[dict[str, Any]]:
    # spawned, not forked: a fork of this process (torch's and Ray's threads started by earlier
    # tests) can hang in the child
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_replay_seed, SEEDS))


def test_half_the_expensive_acquisitions_are_saved_at_equal_accuracy_on_every_seed(
    replays: list[dict[str, Any]],
) -> None:
    assert all(r["frames"] == POSITIONS * TIME_POINTS for r in replays)
    assert all(r["reduction"] >= REDUCTION_GOAL and r["f1_delta"] >= -TOLERANCE for r in replays), (
        replays
    )


def test_the_replay_is_deterministic(replays: list[dict[str, Any]]) -> None:
    """What makes it a fair judge: a seed gives the same figures in another process."""
    assert _replay_seed(SEEDS[0]) == replays[0]
