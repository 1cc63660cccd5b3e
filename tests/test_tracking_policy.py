"""The tracking policy and the linker, without a microscope: pure inputs, checked outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scopeflow import ObjectTable
from tasks.decisions import (
    Acquire,
    Direct,
    FrameView,
    LinkerSettings,
    OnlineLinker,
    TrackingPolicy,
    TrackingRules,
    link_movie,
    two_frame_links,
)

PX = 0.5
SIZE = 200


def objects_at(points_px: list[tuple[float, float]], area: float = 80.0) -> ObjectTable:
    n = len(points_px)
    rows = np.array([p[0] for p in points_px], float)
    cols = np.array([p[1] for p in points_px], float)
    return ObjectTable(
        shape=(SIZE, SIZE),
        label=np.arange(1, n + 1, dtype=np.int32),
        area_px=np.full(n, area),
        centroid_row=rows,
        centroid_col=cols,
        mean_intensity=np.full(n, 500.0),
        bbox=np.zeros((n, 4), np.int64),
    )


def view(t: int, x: float, y: float, *, affine: tuple | None = None, p: int = 0) -> FrameView:
    return FrameView(
        index=t,
        command_id=f"run.track.t{t}",
        stage_x_um=x,
        stage_y_um=y,
        stage_z_um=0.0,
        width=SIZE,
        height=SIZE,
        pixel_size_um=PX,
        affine=affine or (PX, 0.0, 0.0, 0.0, PX, 0.0),
        event_index={"t": t, "p": p},
        t_ready_ns=0,
    )


def rules(**kw) -> TrackingRules:
    base = dict(time_points=10, interval_s=1.0, channel="DAPI", exposure_ms=10.0)
    return TrackingRules(**(base | kw))


def test_the_first_commands_acquire_every_position_at_time_zero():
    policy = TrackingPolicy([("a", 100.0, 200.0), ("b", 300.0, 400.0)], rules())
    commands = policy.first_commands(policy.initial_state())
    assert [c.key for c in commands] == ["t00000-p000", "t00000-p001"]
    event = commands[1].events[0]
    assert (event.x_pos, event.y_pos, event.index["p"]) == (300.0, 400.0, 1)


@pytest.mark.parametrize(
    "affine",
    [(PX, 0.0, 0.0, 0.0, PX, 0.0), (-PX, 0.0, 0.0, 0.0, PX, 0.0), (0.0, PX, 0.0, -PX, 0.0, 0.0)],
    ids=["plain", "flipped-x", "rotated-90"],
)
def test_the_correction_moves_the_stage_towards_the_cell(affine):
    """The sign check: a cell right of centre in stage terms makes the next position move
    right, whatever the camera's flip or rotation (the pixel affine carries them)."""
    policy = TrackingPolicy([("a", 1000.0, 1000.0)], rules(deadband_um=0.5))
    state = policy.initial_state()
    target_x, target_y = 1008.0, 995.0
    # where the cell lies in pixels for this camera orientation
    a, b, _, c, d, _ = affine
    det = a * d - b * c
    dx, dy = target_x - 1000.0, target_y - 1000.0
    col = (d * dx - b * dy) / det + (SIZE - 1) / 2
    row = (-c * dx + a * dy) / det + (SIZE - 1) / 2
    state, decision = policy.decide(
        state, view(0, 1000.0, 1000.0, affine=affine), objects_at([(row, col)])
    )
    (command,) = decision.commands
    assert isinstance(command, Acquire) and command.key == "t00001-p000"
    event = command.events[0]
    assert event.x_pos == pytest.approx(target_x)
    assert event.y_pos == pytest.approx(target_y)
    assert decision.summary["centring_error_um"] == pytest.approx(np.hypot(dx, dy), abs=1e-3)


def test_deadband_holds_the_stage_and_each_step_is_clipped():
    policy = TrackingPolicy([("a", 0.0, 0.0)], rules(deadband_um=2.0, max_step_um=5.0))
    state = policy.initial_state()
    centre = (SIZE - 1) / 2
    state, d0 = policy.decide(state, view(0, 0.0, 0.0), objects_at([(centre, centre + 2)]))
    assert (d0.commands[0].events[0].x_pos, d0.commands[0].events[0].y_pos) == (0.0, 0.0)
    state, d1 = policy.decide(state, view(1, 0.0, 0.0), objects_at([(centre, centre + 40)]))
    assert d1.commands[0].events[0].x_pos == pytest.approx(5.0)  # 20 µm away, clipped to 5


def test_a_division_is_followed_to_the_nearest_daughter_and_kept_in_the_lineage():
    policy = TrackingPolicy([("a", 0.0, 0.0)], rules())
    state = policy.initial_state()
    c = (SIZE - 1) / 2
    state, _ = policy.decide(state, view(0, 0.0, 0.0), objects_at([(c, c), (c + 80, c + 80)]))
    state, _ = policy.decide(state, view(1, 0.0, 0.0), objects_at([(c, c + 1), (c + 80, c + 80)]))
    state, d = policy.decide(
        state,
        view(2, 0.0, 0.0),
        objects_at([(c - 8, c + 2), (c + 10, c + 1), (c + 80, c + 80)]),
    )
    position = state.positions[0]
    assert d.summary["event"] == "division"
    assert position.divisions_followed == 1
    lineage = {row[0]: row for row in position.linker.lineage()}
    followed = lineage[position.followed]
    assert followed[3] != 0 and lineage[followed[3]][2] == 1  # mother ended at t=1
    daughters = [row for row in lineage.values() if row[3] == followed[3]]
    assert len(daughters) == 2


def test_a_lost_cell_drops_its_position_when_the_rule_says_so():
    policy = TrackingPolicy([("a", 0.0, 0.0)], rules(on_lost="drop"))
    state = policy.initial_state()
    c = (SIZE - 1) / 2
    state, _ = policy.decide(state, view(0, 0.0, 0.0), objects_at([(c, c)]))
    events = []
    for t in range(1, 6):
        state, d = policy.decide(state, view(t, 0.0, 0.0), objects_at([]))
        events.append(d.summary["event"])
        if state.positions[0].dropped:
            assert d.commands == ()  # nothing more is acquired there
            break
    assert events[-1] == "lost: position dropped"


def test_a_result_that_is_not_an_object_table_is_refused_with_the_reason():
    policy = TrackingPolicy([("a", 0.0, 0.0)], rules())
    with pytest.raises(ValueError, match="ObjectTable"):
        policy.decide(policy.initial_state(), view(0, 0.0, 0.0), np.zeros((4, 4)))


def test_the_linker_keeps_ids_and_records_gaps_as_new_tracks_with_a_parent():
    linker = OnlineLinker(LinkerSettings(max_step=5.0, max_gap=2))
    a = linker.update(0, np.array([[0.0, 0.0], [50.0, 50.0]]))
    b = linker.update(1, np.array([[1.0, 0.5], [51.0, 50.0]]))
    assert a == b
    linker.update(2, np.array([[52.0, 50.0]]))  # the first cell is missed once
    c = linker.update(3, np.array([[2.0, 1.0], [53.0, 50.0]]))
    assert c[1] == a[1]
    gap_track = linker.tracks[c[0]]
    assert gap_track.parent == a[0] and gap_track.first == 3
    with pytest.raises(ValueError, match="not after"):
        linker.update(3, np.zeros((0, 2)))


def test_offline_and_online_linking_agree():
    rng = np.random.default_rng(0)
    start = rng.uniform(0, 500, (15, 2))
    frames = [start + t * np.array([1.0, -0.5]) + rng.normal(0, 0.3, start.shape) for t in range(6)]
    ids, lineage = link_movie(frames, LinkerSettings(max_step=5.0))
    assert all(sorted(i) == sorted(ids[0]) for i in ids)  # 15 tracks through all frames
    assert len(lineage) == 15 and all(row[1:] == (0, 5, 0) for row in lineage)


def test_move_stage_mode_queues_one_timelapse_and_follows_with_direct_moves():
    policy = TrackingPolicy([("a", 100.0, 100.0)], rules(recentre="move_stage", deadband_um=0.5))
    state = policy.initial_state()
    start, timelapse = policy.first_commands(state)
    assert isinstance(start, Direct) and (start.command.x, start.command.y) == (100.0, 100.0)
    assert isinstance(timelapse, Acquire) and len(timelapse.events) == 10
    assert all(e.x_pos is None for e in timelapse.events)  # taken where the stage follows
    assert timelapse.events[3].min_start_time == 3.0
    c = (SIZE - 1) / 2
    state, decision = policy.decide(state, view(0, 100.0, 100.0), objects_at([(c, c + 10)]))
    (move,) = decision.commands
    assert isinstance(move, Direct) and move.key == "t00000-move"
    assert move.command.x == pytest.approx(105.0)  # 10 px right at 0.5 µm/px


def test_move_stage_mode_follows_one_cell_only():
    with pytest.raises(ValueError, match="one position"):
        TrackingPolicy([("a", 0.0, 0.0), ("b", 1.0, 1.0)], rules(recentre="move_stage"))


def test_the_overview_policy_maps_each_tiles_objects_to_the_stage_and_ends_with_the_last():
    import useq

    from tasks.decisions import OverviewPolicy

    events = [useq.MDAEvent(x_pos=x, y_pos=0.0, index={"p": i}) for i, x in enumerate((0, 100))]
    policy = OverviewPolicy(events)
    state = policy.initial_state()
    (acquire,) = policy.first_commands(state)
    assert acquire.events == tuple(events)
    c = (SIZE - 1) / 2
    first = FrameView(**{**view(0, 0.0, 0.0).__dict__, "event_index": {"p": 0}})
    state, d0 = policy.decide(state, first, objects_at([(c, c + 20)]))
    assert not d0.done and state.detections[0].x_um == pytest.approx(10.0)
    second = FrameView(**{**view(1, 100.0, 0.0).__dict__, "event_index": {"p": 1}})
    state, d1 = policy.decide(state, second, objects_at([]))
    assert d1.done and d1.commands == ()


def _laptrack_links(
    previous: np.ndarray, points: np.ndarray, cutoff: float, split_cutoff: float | None
) -> dict[int, list[int]]:
    from laptrack import LapTrack

    lap = LapTrack(
        cutoff=cutoff,
        splitting_cutoff=split_cutoff if split_cutoff is not None else False,
        merging_cutoff=False,
        gap_closing_cutoff=False,
    )
    children: dict[int, list[int]] = {}
    for (_, i), (_, j) in lap.predict([previous, points]).edges():
        children.setdefault(int(i), []).append(int(j))
    return children


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 40),
    n=st.integers(1, 40),
    field_um=st.floats(20.0, 200.0),
    cutoff=st.floats(30.0, 300.0),
    split_cutoff=st.one_of(st.none(), st.floats(50.0, 600.0)),
    grid=st.booleans(),
)
def test_the_incremental_linker_gives_laptracks_answer_on_two_frames(
    seed: int,
    m: int,
    n: int,
    field_um: float,
    cutoff: float,
    split_cutoff: float | None,
    grid: bool,
) -> None:
    """The online linker's two-frame problem, built with numpy, links and splits exactly as
    ``LapTrack.predict`` does (daughters in the same order), ties included (``grid``)."""
    rng = np.random.default_rng(seed)
    previous = rng.uniform(0, field_um, (m, 2))
    moved = previous[: min(m, n)] + rng.normal(0, 3, (min(m, n), 2))
    points = np.concatenate([moved, rng.uniform(0, field_um, (n - len(moved), 2))])
    if grid:
        previous, points = np.round(previous), np.round(points)
    rng.shuffle(points)
    expected = _laptrack_links(previous, points, cutoff, split_cutoff)
    assert two_frame_links(previous, points, cutoff=cutoff, split_cutoff=split_cutoff) == expected
