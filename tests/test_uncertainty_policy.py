"""The uncertainty-triggered policy (pure) and the virtual stain it listens to (shipped weights,
the training script on a few steps, missing or corrupt weights refused with the fix)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from scopeflow import ConfigurationError, ObjectTable
from tasks.decisions import FrameView, UncertaintyRules, UncertaintyTriggeredPolicy
from tasks.inference import (
    VIRTUAL_STAIN_WEIGHTS,
    analyse_frame,
    instance_scores,
    load_model,
    measure_objects,
)

POSITIONS = [("a", 100.0, 200.0), ("b", 300.0, 400.0)]


def _frame(index: int, p: int, t: int, c: int = 0) -> FrameView:
    return FrameView(
        index=index,
        command_id=None,
        stage_x_um=0.0,
        stage_y_um=0.0,
        stage_z_um=0.0,
        width=8,
        height=8,
        pixel_size_um=1.0,
        affine=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        event_index={"t": t, "p": p, "c": c},
        t_ready_ns=0,
    )


def _table(uncertainty: float | None) -> ObjectTable:
    labels = np.zeros((8, 8), np.int32)
    labels[2:5, 2:5] = 1
    table = measure_objects(labels, np.ones((8, 8)))
    if uncertainty is None:
        return table
    from dataclasses import replace

    return replace(table, extra={"uncertainty": uncertainty})


@pytest.mark.parametrize("threshold", [0.1, 0.3])
def test_the_expensive_channel_is_acquired_exactly_where_uncertainty_passes_the_threshold(
    threshold: float,
) -> None:
    rules = UncertaintyRules(time_points=3, interval_s=2.0, threshold=threshold)
    policy = UncertaintyTriggeredPolicy(POSITIONS, rules)
    state = policy.initial_state()
    first = policy.first_commands(state)
    assert [c.key for c in first] == ["p000-t00000", "p001-t00000"]
    assert all(c.events[0].channel.config == "BF" for c in first)
    rng = np.random.default_rng(int(threshold * 100))
    acquired = []
    for t in range(3):
        for p in range(2):
            u = float(rng.uniform(0, 0.5))
            state, decision = policy.decide(state, _frame(10 * t + p, p, t), _table(u))
            keys = [c.key for c in decision.commands]
            expensive = [c for c in decision.commands if c.key.endswith("-x")]
            assert bool(expensive) == (u > threshold), (u, keys)
            if expensive:
                acquired.append((p, t))
                event = expensive[0].events[0]
                assert event.channel.config == "DAPI" and event.exposure == 50.0
                assert (event.x_pos, event.y_pos) == POSITIONS[p][1:]
                assert event.index == {"t": t, "p": p, "c": 1}
                assert expensive[0].due_s == 2.0 * t  # at once, at this time point
            following = [k for k in keys if not k.endswith("-x")]
            assert following == ([f"p{p:03d}-t{t + 1:05d}"] if t < 2 else [])
    assert state.acquired == acquired
    # the expensive frame itself changes nothing
    state, decision = policy.decide(state, _frame(99, 0, 0, c=1), _table(None))
    assert decision.commands == () and decision.summary["role"] == "expensive"


def test_the_static_protocol_acquires_every_time_point_and_a_missing_measure_is_refused() -> None:
    rules = UncertaintyRules(time_points=2, interval_s=1.0, threshold=0.9, always=True)
    policy = UncertaintyTriggeredPolicy(POSITIONS[:1], rules)
    state = policy.initial_state()
    state, decision = policy.decide(state, _frame(0, 0, 0), _table(0.0))
    assert [c.key for c in decision.commands] == ["p000-t00000-x", "p000-t00001"]
    with pytest.raises(ValueError, match=r"no 'uncertainty'.*virtual-stain"):
        policy.decide(state, _frame(1, 0, 1), _table(None))
    with pytest.raises(ValueError, match="both 'BF'"):
        UncertaintyRules(time_points=1, interval_s=1.0, threshold=0.1, expensive=("BF", 5.0))


@pytest.mark.parametrize("seed", [3, 11])
def test_the_shipped_virtual_stain_finds_nuclei_in_brightfield_and_reports_its_doubt(
    seed: int,
) -> None:
    from tasks.training import stain_frames

    model = load_model("virtual-stain")
    assert 0.0 <= model.threshold <= 1.0
    assert VIRTUAL_STAIN_WEIGHTS.stat().st_size < 2_000_000
    scores, doubts = [], []
    for frame in stain_frames(seed, 1, 3, size=256):
        table = analyse_frame(model, frame.brightfield, pixel_size_um=frame.pixel_size_um)
        labels = model.segment(frame.brightfield, pixel_size_um=frame.pixel_size_um)
        assert labels.shape == frame.brightfield.shape and labels.dtype == np.int32
        assert 0.0 <= table.extra["uncertainty"] <= 1.0
        scores.append(instance_scores(frame.labels, labels, ignore=frame.ignore).f1)
        doubts.append(table.extra["uncertainty"])
    assert np.mean(scores) > 0.6, (scores, doubts)
    # the ensemble is deterministic: the same frame gives the same uncertainty
    again = analyse_frame(model, frame.brightfield, pixel_size_um=frame.pixel_size_um)
    assert again.extra["uncertainty"] == doubts[-1]


def test_missing_or_corrupt_weights_name_the_training_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"not found.*train_virtual_stain --seed 0"):
        load_model("virtual-stain", weights=str(tmp_path / "nope.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(VIRTUAL_STAIN_WEIGHTS.read_bytes()[:5000])
    with pytest.raises(ConfigurationError, match=r"cannot load.*train_virtual_stain --seed 0"):
        load_model("virtual-stain", weights=str(corrupt))
    other = tmp_path / "unet.pt"
    from tasks.inference import UNET_DEFAULT_WEIGHTS

    shutil.copy(UNET_DEFAULT_WEIGHTS, other)
    with pytest.raises(ConfigurationError, match="retrain them with"):
        load_model("virtual-stain", weights=str(other))


def test_the_training_script_runs_a_few_steps_and_writes_loadable_weights(tmp_path: Path) -> None:
    from tasks.training.train_virtual_stain import main

    out = tmp_path / "vs.pt"
    args = ["--seed", "1", "--out", str(out), "--iterations", "3", "--members", "2"]
    args += ["--slides", "1", "--per-slide", "2", "--calibration-slides", "1"]
    args += ["--calibration-per-slide", "2"]
    assert main(args) == 0
    model = load_model("virtual-stain", weights=str(out))
    assert len(model.nets) == 2
    assert model.meta["calibration_frames"] == 2
    assert -1.0 <= model.threshold <= 1.0
