"""The tracking policy that re-focuses, without a microscope: a cell that moves, a focus that
drifts (sharpness a Gaussian of the distance to it), pure inputs, checked outputs."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest

from tasks.decisions import (
    Acquire,
    FocusedTrackingPolicy,
    FocusRules,
    RefocusRules,
    TrackingPolicy,
)

from .test_tracking_policy import SIZE, objects_at, rules, view

DOF = 2.73  # the simulator's 20x at DAPI
FOCUS = FocusRules(dof_um=DOF, z_limits_um=(-20.0, 20.0))


def focus_score(z: float, focus_z: float) -> SimpleNamespace:
    sharp = 1.0 + 10.0 * math.exp(-(((z - focus_z) / DOF) ** 2))
    return SimpleNamespace(sharpness=sharp, structure=5.0, error=None)


def run(every: int, drift_um_per_t: float, time_points: int = 6) -> tuple[list, list, object]:
    """Feed the policy until done: the cell 2 µm further right each time point, the focus
    ``drift_um_per_t`` further each time point. Returns (image z, true focus) per time point,
    every command key, and the final state."""
    tracking = TrackingPolicy([("a", 100.0, 100.0)], rules(time_points=time_points), z_um=[0.0])
    policy = FocusedTrackingPolicy(tracking, RefocusRules(FOCUS, every=every))
    state = policy.initial_state()
    queue = list(policy.first_commands(state))
    keys, images, frame = [], [], 0
    while queue:
        command = queue.pop(0)
        assert isinstance(command, Acquire)
        keys.append(command.key)
        for event in command.events:
            t = event.index["t"]
            truth = drift_um_per_t * t
            v = replace(view(t, event.x_pos, event.y_pos), index=frame, stage_z_um=event.z_pos,
                        event_index=dict(event.index))  # fmt: skip
            frame += 1
            if event.index.get("a", 0):
                result = focus_score(event.z_pos, truth)
            else:
                images.append((event.z_pos, truth))
                cell_col = SIZE / 2 + (100.0 + 2.0 * t - event.x_pos) / 0.5
                result = objects_at([(SIZE / 2, cell_col)])
            state, decision = policy.decide(state, v, result)
            queue.extend(decision.commands)
    return images, keys, state


def test_refocusing_keeps_each_time_point_within_the_depth_of_field() -> None:
    images, _, state = run(every=1, drift_um_per_t=0.8)
    assert len(images) == 6
    assert all(abs(z - truth) <= DOF / 2 for z, truth in images), images
    # without re-focusing the same drift leaves the depth of field (the sign of the correction)
    static, _, _ = run(every=0, drift_um_per_t=0.8)
    assert abs(static[-1][0] - static[-1][1]) > DOF / 2, static
    calls = state.focus[0].calls
    assert [c["t"] for c in calls] == [1, 2, 3, 4, 5] and all(c["found"] for c in calls)
    assert all(c["frames"] <= FOCUS.max_frames for c in calls)


def test_sweeps_are_keyed_by_time_point_position_and_round_and_come_before_the_image() -> None:
    _, keys, _ = run(every=2, drift_um_per_t=0.5)
    assert len(keys) == len(set(keys))  # every command its own id
    assert keys[:2] == ["t00000-p000", "t00001-p000"]  # t=0 was focused before the loop
    sweep = keys.index("t00002-p000-af0")
    assert keys.index("t00002-p000") > sweep  # the image after its focus call
    assert not any(k.startswith("t00003-p000-af") for k in keys)  # every 2nd time point


def test_refocusing_needs_queued_time_points() -> None:
    tracking = TrackingPolicy([("a", 0.0, 0.0)], rules(recentre="move_stage"))
    with pytest.raises(ValueError, match="recentre='next_event'"):
        FocusedTrackingPolicy(tracking, RefocusRules(FOCUS))
