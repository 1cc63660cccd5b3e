"""Carry-forward (pure, no microscope): the change in model space since the last real frame
decides, and the last real nuclei, moved as the model saw them move, stand in."""

from __future__ import annotations

import numpy as np
import pytest

from scopeflow import ObjectTable
from tasks.decisions import (
    FrameView,
    UncertaintyRules,
    UncertaintyTriggeredPolicy,
    carry_forward,
    changed_nuclei,
    confirmed_candidates,
    match_points,
    model_change,
)
from tasks.inference import detection_scores_at, measure_objects

PX = 0.5  # µm per pixel
SIZE = 200


def _view(p: int, t: int, c: int) -> FrameView:
    return FrameView(
        index=0,
        command_id=None,
        stage_x_um=0.0,
        stage_y_um=0.0,
        stage_z_um=0.0,
        width=SIZE,
        height=SIZE,
        pixel_size_um=PX,
        affine=(PX, 0.0, 0.0, 0.0, PX, 0.0),
        event_index={"t": t, "p": p, "c": c},
        t_ready_ns=0,
    )


def _nuclei(points: np.ndarray, uncertainty: float = 0.5) -> ObjectTable:
    """A table of 5x5-pixel nuclei centred on ``points`` (row, col)."""
    from dataclasses import replace

    labels = np.zeros((SIZE, SIZE), np.int32)
    for k, (r, c) in enumerate(np.rint(points).astype(int), start=1):
        labels[r - 2 : r + 3, c - 2 : c + 3] = k
    table = measure_objects(labels, np.ones((SIZE, SIZE)))
    return replace(table, extra={"uncertainty": uncertainty})


def _scatter(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.array([(r, c) for r in range(20, 180, 20) for c in range(20, 180, 20)], float)
    return grid[rng.choice(len(grid), n, replace=False)]


def test_matching_is_one_to_one_within_the_radius_after_the_median_shift() -> None:
    then = _scatter(12, 0)
    now = then + np.array([3.0, -2.0])  # the whole field moved by 3.6 px
    i, j = match_points(then, now, radius=5.0)
    assert len(i) == 12 and np.array_equal(np.sort(i), np.sort(j))
    change = model_change(then, now, radius=2.0)  # the shift first, then a tight radius
    assert change.f1 == 1.0
    assert change.shift == pytest.approx((3.0, -2.0))
    # two new nuclei and one gone: 11 twins of 12 and 13
    grown = np.vstack([now[1:], [[5.0, 5.0], [195.0, 195.0]]])
    assert model_change(then, grown, radius=2.0).f1 == pytest.approx(2 * 11 / (12 + 13))
    assert model_change(np.zeros((0, 2)), np.zeros((0, 2)), 2.0).f1 == 1.0
    assert model_change(then, np.zeros((0, 2)), 2.0).f1 == 0.0


def test_the_stand_in_moves_the_real_nuclei_by_the_median_shift_and_adds_cells_entering() -> None:
    real = _scatter(6, 1)
    model_then = real + 0.5  # the model's nuclei: near the real ones
    shift = np.array([2.0, -1.0])
    model_now = model_then + shift  # the field moved by (2, -1) px...
    model_now[0] += (1.5, 0.0)  # ...and one twin's centroid jittered: the median ignores it
    entering, inside = [[3.0, 100.0]], [[100.0, 110.0]]  # new: at the edge, and inside
    model_now = np.vstack([model_now, entering, inside])
    change = model_change(model_then, model_now, radius=6.0)
    assert change.shift == pytest.approx((2.0, -1.0))
    stand_in = carry_forward(real, model_now, change, radius=6.0, shape=(SIZE, SIZE), edge_px=10.0)
    assert stand_in == pytest.approx(np.vstack([real + shift, entering]))
    # the unmatched nuclei: the one at the edge counts in full, the one inside as flicker
    assert changed_nuclei(model_then, model_now, change, (SIZE, SIZE), 10.0, 0.3) == (
        pytest.approx(1.3)
    )
    # a shift that pushes nuclei out of the frame drops them
    edge = np.array([[1.0, 100.0], [100.0, 100.0]])
    gone = carry_forward(
        edge, edge - (5.0, 0.0), model_change(edge, edge - (5.0, 0.0), 6.0), 6.0, (SIZE, SIZE), 0.0
    )
    assert gone.tolist() == [[95.0, 100.0]]


def _run(
    policy: UncertaintyTriggeredPolicy, model: list[np.ndarray], real: list[np.ndarray]
) -> list[dict]:
    """One position through the policy: each cheap frame, and its expensive one if asked."""
    state = policy.initial_state()
    out = []
    for t, (m, r) in enumerate(zip(model, real, strict=True)):
        state, decision = policy.decide(state, _view(0, t, 0), _nuclei(m))
        keys = [c.key for c in decision.commands]
        if decision.summary["acquire"]:
            assert keys[0] == f"p000-t{t:05d}-x"
            state, _ = policy.decide(state, _view(0, t, 1), _nuclei(r))
        out.append(decision.summary)
    return out


def _rules(**kw) -> UncertaintyRules:
    base = {
        "time_points": 6,
        "interval_s": 2.0,
        "threshold": 1.0,
        "flicker_weight": 0.3,
        "predictor": "carry-forward",
    }
    return UncertaintyRules(**(base | kw))


def test_a_still_sample_is_acquired_once_and_carried_forward_with_its_real_nuclei() -> None:
    truth = _scatter(10, 2)
    model = [truth[:8] + 1.0] * 6  # the model misses two nuclei, every time the same two
    real = [truth] * 6
    policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], _rules())
    summaries = _run(policy, model, real)
    assert [s["reason"] for s in summaries] == ["no-reference"] + ["predicted"] * 5
    assert all(s["uncertainty"] == 0.0 for s in summaries[1:])
    for s in summaries[1:]:  # the stand-in: the real nuclei, the model's misses included
        assert np.asarray(s["stand_in"]) == pytest.approx(truth, abs=0.01)
        assert "stand_in" in s and s["reference_t"] == 0
    assert "stand_in" not in summaries[0]


def test_a_change_in_model_space_triggers_the_expensive_channel_and_a_new_reference() -> None:
    truth = _scatter(10, 3)
    divided = np.vstack([truth, truth[:5] + np.array([0.0, 9.0])])  # five cells divided at t 3
    model = [truth] * 3 + [divided] * 3
    real = [truth] * 3 + [divided] * 3
    policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], _rules())
    summaries = _run(policy, model, real)
    reasons = [s["reason"] for s in summaries]
    assert reasons == [
        "no-reference",
        "predicted",
        "predicted",
        "uncertain",
        "predicted",
        "predicted",
    ]
    assert summaries[3]["uncertainty"] == pytest.approx(5 * 0.3)  # five new, inside the field
    assert summaries[4]["reference_t"] == 3
    assert len(summaries[5]["stand_in"]) == 15
    # scored on truth labels, the logged stand-in finds every nucleus
    labels = np.zeros((SIZE, SIZE), np.int32)
    for k, (r, c) in enumerate(divided.astype(int), start=1):
        labels[r - 3 : r + 4, c - 3 : c + 4] = k
    assert detection_scores_at(labels, np.asarray(summaries[5]["stand_in"])).f1 == 1.0


def test_a_nucleus_the_model_finds_every_other_frame_is_flicker_not_change() -> None:
    truth = _scatter(10, 7)
    flicker = [truth if t % 2 else truth[1:] for t in range(6)]  # one nucleus on and off
    policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], _rules())
    summaries = _run(policy, flicker, [truth] * 6)
    assert [s["reason"] for s in summaries] == ["no-reference"] + ["predicted"] * 5
    assert {s["uncertainty"] for s in summaries[1:]} == {0.0, 0.3}
    # two cells entering at the edge are a change: the expensive channel is acquired
    entering = [truth] * 3 + [np.vstack([truth, [[2.0, 60.0], [197.0, 60.0]]])] * 3
    summaries = _run(policy, entering, entering)
    assert [s["reason"] for s in summaries][3] == "uncertain"


def test_a_predicted_run_never_exceeds_max_predicted_run() -> None:
    truth = _scatter(8, 4)
    policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], _rules(max_predicted_run=2))
    summaries = _run(policy, [truth] * 6, [truth] * 6)
    reasons = [s["reason"] for s in summaries]
    assert reasons == [
        "no-reference",
        "predicted",
        "predicted",
        "max-run",
        "predicted",
        "predicted",
    ]


def test_the_static_protocol_and_bad_rules() -> None:
    truth = _scatter(8, 5)
    policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], _rules(always=True))
    assert all(s["acquire"] for s in _run(policy, [truth] * 6, [truth] * 6))
    with pytest.raises(ValueError, match="predictor must be"):
        _rules(predictor="crystal-ball")
    with pytest.raises(ValueError, match="max_predicted_run must be at least 1"):
        _rules(max_predicted_run=0)
    # the expensive frame of an acquisition must come back segmented
    policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], _rules())
    state, _ = policy.decide(policy.initial_state(), _view(0, 0, 0), _nuclei(truth))
    with pytest.raises(ValueError, match="reference model"):
        policy.decide(state, _view(0, 0, 1), None)


def test_logged_centroids_score_as_the_labels_they_came_from() -> None:
    """A stand-in scored from its logged centroids counts as its label image would."""
    from tasks.inference import detection_scores

    truth = np.zeros((SIZE, SIZE), np.int32)
    for k, (r, c) in enumerate(_scatter(12, 6).astype(int), start=1):
        truth[r - 4 : r + 5, c - 4 : c + 5] = k
    found = _nuclei(np.vstack([_scatter(12, 6)[:9] + 2.0, [[5.0, 5.0]]]))  # 9 hits, 1 spurious
    labels = np.zeros((SIZE, SIZE), np.int32)
    for k, (r, c) in enumerate(zip(found.centroid_row, found.centroid_col, strict=True), 1):
        labels[int(r) - 2 : int(r) + 3, int(c) - 2 : int(c) + 3] = k
    centres = np.stack([found.centroid_row, found.centroid_col], axis=1)
    by_points, by_labels = detection_scores_at(truth, centres), detection_scores(truth, labels)
    assert by_points == by_labels
    assert (by_points.tp, by_points.fp, by_points.fn) == (9, 1, 3)


def _with_candidates(real: np.ndarray, candidates: np.ndarray) -> ObjectTable:
    """A reference table as ``classical-candidates`` makes it: the real nuclei, then the
    candidates, ``classical_nuclei`` saying where the candidates start."""
    from dataclasses import replace

    table = _nuclei(np.vstack([real, candidates]))
    return replace(table, extra={"classical_nuclei": float(len(real))})


def test_a_candidate_the_model_confirms_joins_the_reference_and_the_stand_in() -> None:
    truth = _scatter(10, 8)
    missed, unseen = truth[0], np.array([100.0, 110.0])  # unseen: nothing there in the model
    real = truth[1:]  # the reference frame's segmentation missed truth[0]
    near_real = truth[1] + np.array([0.0, 6.0])  # beside a real nucleus: a split of it
    assert confirmed_candidates(real, [missed, unseen, near_real], truth, 8.0).tolist() == [
        missed.tolist()
    ]
    policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], _rules())
    state = policy.initial_state()
    state, first = policy.decide(state, _view(0, 0, 0), _nuclei(truth))
    assert first.summary["acquire"]
    expensive = _with_candidates(real, np.array([missed, unseen, near_real]))
    state, logged = policy.decide(state, _view(0, 0, 1), expensive)
    assert (logged.summary["candidates"], logged.summary["candidates_confirmed"]) == (3, 1)
    state, second = policy.decide(state, _view(0, 1, 0), _nuclei(truth))
    assert second.summary["reason"] == "predicted"
    assert sorted(map(tuple, np.round(second.summary["stand_in"]))) == sorted(
        map(tuple, np.round(truth))
    )
    # a reference without candidates (the plain classical model) stands in as it was
    state, _ = policy.decide(policy.initial_state(), _view(0, 0, 0), _nuclei(truth))
    state, logged = policy.decide(state, _view(0, 0, 1), _nuclei(real))
    assert "candidates" not in logged.summary
    state, second = policy.decide(state, _view(0, 1, 0), _nuclei(truth))
    assert len(second.summary["stand_in"]) == len(real)


def test_classical_candidates_segments_as_classical_and_adds_a_dim_nucleus_as_candidate() -> None:
    from tasks.inference import analyse_frame, load_model

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    image = rng.normal(100.0, 2.0, (SIZE, SIZE))
    for (r, c), peak in (((60, 60), 2000.0), ((60, 140), 2000.0), ((140, 100), 150.0)):
        image += peak * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 6.0**2))
    classical, model = load_model("classical"), load_model("classical-candidates")
    plain = classical.segment(image, pixel_size_um=PX)
    assert np.array_equal(model.segment(image, pixel_size_um=PX), plain)
    assert plain.max() == 2  # Otsu's split leaves the dim nucleus out
    table = analyse_frame(model, image, pixel_size_um=PX)
    real = table.label <= table.extra["classical_nuclei"]
    assert table.extra["classical_nuclei"] == 2 and len(table) == 3
    candidates = np.stack([table.centroid_row, table.centroid_col], axis=1)[~real]
    assert candidates == pytest.approx(np.array([[140.0, 100.0]]), abs=1.5)
