"""The event-triggered policy and its detectors, without a microscope: pure inputs, checked
outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from scopeflow import ObjectTable
from tasks.decisions import (
    Acquire,
    DivisionDetector,
    EventDetector,
    EventRules,
    EventTriggeredPolicy,
    EventView,
    FastProtocol,
    FrameView,
    GentleProtocol,
    RoundingDetector,
)

PX = 0.5
SIZE = 200
CENTRE = SIZE / 2
DIM, BRIGHT = 100.0, 250.0
BACKGROUND = [(20.0, 20.0), (20.0, 180.0), (180.0, 20.0), (180.0, 180.0)]  # outside the ROI


def objects(points: list[tuple[float, float, float]]) -> ObjectTable:
    """(row, col, mean intensity) per object, plus four dim nuclei in the frame's corners; a
    bright nucleus is small (rounded)."""
    rows = [(r, c, i) for r, c, i in points] + [(r, c, DIM) for r, c in BACKGROUND]
    n = len(rows)
    return ObjectTable(
        shape=(SIZE, SIZE),
        label=np.arange(1, n + 1, dtype=np.int32),
        area_px=np.array([50.0 if r[2] == BRIGHT else 80.0 for r in rows]),
        centroid_row=np.array([r[0] for r in rows]),
        centroid_col=np.array([r[1] for r in rows]),
        mean_intensity=np.array([r[2] for r in rows]),
        bbox=np.zeros((n, 4), np.int64),
    )


def frame(t: int, *, p: int = 0, m: int = 0, c: int = 0, z: int = 0, ready: int = 0) -> FrameView:
    return FrameView(
        index=100 * p + t,
        command_id=f"run.event.p{p:03d}-t{t:05d}",
        stage_x_um=1000.0 * (p + 1),
        stage_y_um=500.0,
        stage_z_um=0.0,
        width=SIZE,
        height=SIZE,
        pixel_size_um=PX,
        affine=(PX, 0.0, 0.0, 0.0, PX, 0.0),
        event_index={"t": t, "p": p, "c": c, "z": z, "m": m},
        t_ready_ns=ready,
    )


QUIET = objects([(CENTRE, CENTRE, DIM)])
ROUNDED = objects([(CENTRE, CENTRE, BRIGHT)])
DIVIDED = objects([(CENTRE - 8, CENTRE, DIM), (CENTRE + 8, CENTRE, DIM)])


def rules(**kw: object) -> EventRules:
    base: dict[str, object] = {
        "duration_s": 100.0,
        "gentle": GentleProtocol("DAPI", 10.0, 4.0),
        "fast": FastProtocol((("DAPI", 50.0), ("GFP", 40.0)), (-1.0, 0.0, 1.0), 1.0),
        "roi_um": 40.0,
        "after_frames": 1,
        "max_fast_s": 30.0,
        "cooldown_s": 10.0,
    }
    return EventRules(**(base | kw))  # type: ignore[arg-type]


def policy(**kw: object) -> EventTriggeredPolicy:
    return EventTriggeredPolicy([("a", 1000.0, 500.0), ("b", 2000.0, 500.0)], rules(**kw))


def only_acquire(decision) -> Acquire:
    (command,) = decision.commands
    assert isinstance(command, Acquire)
    return command


def test_every_position_starts_gentle_at_time_zero() -> None:
    pol = policy()
    commands = pol.first_commands(pol.initial_state())
    assert [c.key for c in commands] == ["p000-t00000", "p001-t00000"]
    for command in commands:
        (event,) = command.events
        assert (event.channel.config, event.exposure, command.due_s) == ("DAPI", 10.0, 0.0)
        assert event.index["m"] == 0


def test_quiet_frames_keep_the_gentle_rate() -> None:
    pol = policy()
    state = pol.initial_state()
    pol.first_commands(state)
    state, decision = pol.decide(state, frame(0), QUIET)
    command = only_acquire(decision)
    assert command.key == "p000-t00001" and command.due_s == 4.0 and len(command.events) == 1
    assert decision.summary["fired"] == [] and decision.summary["next_mode"] == "gentle"


def test_a_rounded_nucleus_in_the_roi_switches_that_position_to_fast_at_once() -> None:
    pol = policy()
    state = pol.initial_state()
    pol.first_commands(state)
    state, _ = pol.decide(state, frame(0), QUIET)
    state, decision = pol.decide(state, frame(1, ready=7), ROUNDED)
    command = only_acquire(decision)
    assert decision.summary["switch"] == "to fast" and decision.summary["fired"] == ["rounding"]
    assert command.due_s == 4.0  # the trigger frame's own time: sent now
    assert len(command.events) == 6  # 2 channels x 3 planes
    assert {e.index["m"] for e in command.events} == {1}
    assert sorted({e.z_pos for e in command.events}) == [-1.0, 0.0, 1.0]
    assert all(e.x_pos == 1000.0 and e.y_pos == 500.0 for e in command.events)
    assert state.positions[0].triggers == [
        {"t": 1, "frame": 1, "by": ["rounding"], "t_ready_ns": 7}
    ]
    assert state.positions[1].mode == "gentle"  # the other position is not touched


def test_a_rounded_nucleus_outside_the_roi_triggers_nothing() -> None:
    pol = policy()
    state = pol.initial_state()
    pol.first_commands(state)
    before = objects([(CENTRE, CENTRE, DIM), (CENTRE, CENTRE + 70, DIM)])  # 35 µm away
    outside = objects([(CENTRE, CENTRE, DIM), (CENTRE, CENTRE + 70, BRIGHT)])
    state, _ = pol.decide(state, frame(0), before)
    state, decision = pol.decide(state, frame(1), outside)
    assert decision.summary["fired"] == [] and state.positions[0].mode == "gentle"


def test_the_event_runs_fast_through_the_division_then_returns_to_gentle() -> None:
    pol = policy()
    state = pol.initial_state()
    pol.first_commands(state)
    state, d = pol.decide(state, frame(0), QUIET)
    state, d = pol.decide(state, frame(1), ROUNDED)
    assert d.summary["switch"] == "to fast" and only_acquire(d).due_s == 4.0
    state, d = pol.decide(state, frame(2, m=1, z=1), ROUNDED)  # still rounded: fast goes on
    assert only_acquire(d).due_s == 5.0 and d.summary["fired"] == ["rounding"]
    state, d = pol.decide(state, frame(3, m=1, z=1), DIVIDED)
    assert d.summary["fired"] == ["division"] and d.summary["next_mode"] == "fast"
    state, d = pol.decide(state, frame(4, m=1, z=1), DIVIDED)  # quiet 1 = after_frames
    assert d.summary["next_mode"] == "fast" and only_acquire(d).due_s == 7.0
    state, d = pol.decide(state, frame(5, m=1, z=1), DIVIDED)
    assert d.summary["switch"] == "to gentle: event over"
    command = only_acquire(d)
    assert command.due_s == 11.0 and len(command.events) == 1
    assert command.events[0].index["m"] == 0


def test_with_end_on_an_event_lasts_until_the_division_even_if_rounding_flickers() -> None:
    pol = policy(end_on=("division",), after_frames=1)
    state = pol.initial_state()
    pol.first_commands(state)
    state, _ = pol.decide(state, frame(0), QUIET)
    state, d = pol.decide(state, frame(1), ROUNDED)
    assert d.summary["switch"] == "to fast"
    lost = objects([(CENTRE, CENTRE, DIM)])  # the rounded nucleus was missed in these frames
    for t in (2, 3, 4, 5):
        state, d = pol.decide(state, frame(t, m=1, z=1), lost)
        assert d.summary["fired"] == [] and d.summary["next_mode"] == "fast"
    state, d = pol.decide(state, frame(6, m=1, z=1), ROUNDED)
    state, d = pol.decide(state, frame(7, m=1, z=1), DIVIDED)
    assert d.summary["fired"] == ["division"] and d.summary["next_mode"] == "fast"
    state, d = pol.decide(state, frame(8, m=1, z=1), DIVIDED)
    assert d.summary["switch"] == "to gentle: event over"


def test_frames_other_than_the_detection_plane_decide_nothing() -> None:
    pol = policy()
    state = pol.initial_state()
    pol.first_commands(state)
    state, _ = pol.decide(state, frame(0), QUIET)
    state, _ = pol.decide(state, frame(1), ROUNDED)
    for c, z in ((1, 1), (0, 0), (0, 2)):
        state, d = pol.decide(state, frame(2, m=1, c=c, z=z), QUIET)
        assert d.commands == () and d.summary["role"] == "extra"
    assert state.positions[0].mode == "fast"


def test_a_time_limit_ends_a_long_event_and_a_cooldown_holds_off_the_next() -> None:
    pol = policy(max_fast_s=3.0, cooldown_s=10.0)
    state = pol.initial_state()
    pol.first_commands(state)
    state, _ = pol.decide(state, frame(0), QUIET)
    state, _ = pol.decide(state, frame(1), ROUNDED)  # fast from 4 s
    switches = []
    for t in range(2, 8):
        m = 1 if state.positions[0].mode == "fast" else 0
        state, d = pol.decide(state, frame(t, m=m, z=1 if m else 0), ROUNDED)
        switches.append((only_acquire(d).due_s, d.summary["fired"], d.summary["switch"]))
    assert switches == [
        (5.0, ["rounding"], None),
        (6.0, ["rounding"], None),
        (7.0, ["rounding"], None),
        (11.0, ["rounding"], "to gentle: time limit"),  # 3 s fast; a 10 s cooldown
        (15.0, ["rounding"], None),  # still rounded, but inside the cooldown
        (19.0, ["rounding"], None),
    ]
    state, d = pol.decide(state, frame(8), ROUNDED)  # 19 s >= 7 + 10: may trigger again
    assert d.summary["switch"] == "to fast"


def test_nothing_is_scheduled_past_the_run_duration() -> None:
    pol = policy(duration_s=6.0)
    state = pol.initial_state()
    pol.first_commands(state)
    state, d = pol.decide(state, frame(0), QUIET)
    assert only_acquire(d).due_s == 4.0
    state, d = pol.decide(state, frame(1), QUIET)
    assert d.commands == ()


@dataclass(frozen=True)
class Broken:
    name: str = "broken"

    def detect(self, view: EventView) -> bool:
        raise RuntimeError("model file missing")


def test_a_detector_that_raises_stops_its_position_only_with_the_reason() -> None:
    pol = EventTriggeredPolicy(
        [("a", 1000.0, 500.0), ("b", 2000.0, 500.0)], rules(), (RoundingDetector(), Broken())
    )
    assert isinstance(Broken(), EventDetector)
    state = pol.initial_state()
    pol.first_commands(state)
    state, d = pol.decide(state, frame(0), QUIET)
    assert d.commands == ()
    assert "RuntimeError: model file missing" in d.summary["stopped"]
    assert state.positions[0].mode == "stopped" and state.positions[1].mode == "gentle"
    state, d = pol.decide(state, frame(1), QUIET)
    assert d.commands == () and d.summary["stopped"]


def test_a_user_detector_plugs_in_next_to_the_built_in_ones() -> None:
    @dataclass(frozen=True)
    class Crowded:
        name: str = "crowded"

        def detect(self, view: EventView) -> bool:
            return int(view.in_roi.sum()) >= 2

    pol = EventTriggeredPolicy([("a", 1000.0, 500.0)], rules(), (RoundingDetector(), Crowded()))
    state = pol.initial_state()
    pol.first_commands(state)
    state, d = pol.decide(state, frame(0), DIVIDED)
    assert d.summary["fired"] == ["crowded"] and d.summary["switch"] == "to fast"


def test_the_same_frames_give_the_same_commands() -> None:
    runs = []
    for _ in range(2):
        pol = policy()
        state = pol.initial_state()
        keys = [c.key for c in pol.first_commands(state)]
        for t, objs in enumerate((QUIET, ROUNDED, ROUNDED, DIVIDED)):
            m = 1 if state.positions[0].mode == "fast" else 0
            state, d = pol.decide(state, frame(t, m=m, z=1 if m else 0), objs)
            keys += [(c.key, c.due_s, len(c.events)) for c in d.commands]
        runs.append(keys)
    assert runs[0] == runs[1]


def test_rounding_is_a_turn_brighter_and_smaller_and_division_needs_it_before() -> None:
    rounding = RoundingDetector()
    detector = DivisionDetector(rounding)
    pol = policy()

    def view_of(objs: ObjectTable, previous: EventView | None) -> EventView:
        state = pol.initial_state()
        v = pol._view(state.positions[0], frame(0), objs)
        return EventView(v.objects, v.x_um, v.y_um, v.in_roi, previous)

    quiet = view_of(QUIET, None)
    rounded = view_of(ROUNDED, quiet)
    assert rounding.detect(rounded) and not rounding.detect(view_of(ROUNDED, None))
    assert rounding.detect(view_of(ROUNDED, rounded))  # stays rounded
    assert not rounding.detect(view_of(ROUNDED, view_of(ROUNDED, None)))  # never seen turning
    assert not detector.detect(view_of(DIVIDED, None))
    assert not detector.detect(view_of(DIVIDED, quiet))
    assert detector.detect(view_of(DIVIDED, rounded))
    assert not detector.detect(view_of(ROUNDED, rounded))
    bright_daughters = objects([(CENTRE - 8, CENTRE, BRIGHT), (CENTRE + 8, CENTRE, BRIGHT)])
    bright_daughters.area_px[:2] = 80.0  # bright, but as large as interphase nuclei
    assert not rounding.detect(view_of(bright_daughters, rounded))
    assert detector.detect(view_of(bright_daughters, rounded))


def test_protocols_that_make_no_sense_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="must be shorter"):
        rules(fast=FastProtocol(interval_s=5.0))
    with pytest.raises(ValueError, match=r"must include 0\.0"):
        FastProtocol(z_offsets_um=(-1.0, 1.0))
    with pytest.raises(ValueError, match="at least one"):
        FastProtocol(channels=())


OTHER_QUIET = objects([(CENTRE, CENTRE, BRIGHT), (CENTRE + 30, CENTRE, DIM)])
OTHER_ROUNDED = objects([(CENTRE, CENTRE, BRIGHT), (CENTRE + 30, CENTRE, BRIGHT)])


def test_a_time_limit_mutes_only_that_events_objects_so_another_cell_still_triggers() -> None:
    pol = policy(max_fast_s=2.0, cooldown_s=10.0)
    state = pol.initial_state()
    pol.first_commands(state)
    state, d = pol.decide(state, frame(0), QUIET)
    state, d = pol.decide(state, frame(1), ROUNDED)  # due 4 s: to fast
    for t in (2, 3):
        state, d = pol.decide(state, frame(t, m=1, z=1), OTHER_QUIET)
        assert d.summary["next_mode"] == "fast"
    state, d = pol.decide(state, frame(4, m=1, z=1), OTHER_QUIET)  # 6 s: 2 s fast
    assert d.summary["switch"] == "to gentle: time limit"
    state, d = pol.decide(state, frame(5), OTHER_QUIET)  # the same nucleus: muted
    assert d.summary["fired"] == ["rounding"] and d.summary["switch"] is None
    state, d = pol.decide(state, frame(6), OTHER_ROUNDED)  # another one, 15 µm away
    assert d.summary["switch"] == "to fast"  # while the first still cools down (until 16 s)
    assert len(state.positions[0].triggers) == 2


def test_a_detector_without_where_mutes_the_whole_region_after_a_time_limit() -> None:
    @dataclass(frozen=True)
    class Bright:
        name: str = "bright"

        def detect(self, view: EventView) -> bool:
            return bool((view.objects.mean_intensity[view.in_roi] >= BRIGHT).any())

    pol = EventTriggeredPolicy(
        [("a", 1000.0, 500.0)], rules(max_fast_s=2.0, cooldown_s=10.0), (Bright(),)
    )
    state = pol.initial_state()
    pol.first_commands(state)
    state, d = pol.decide(state, frame(0), ROUNDED)
    assert d.summary["switch"] == "to fast"
    for t in (1, 2, 3):
        state, d = pol.decide(state, frame(t, m=1, z=1), ROUNDED)
    assert d.summary["switch"] == "to gentle: time limit"
    state, d = pol.decide(state, frame(4), OTHER_ROUNDED)
    assert d.summary["fired"] == ["bright"] and d.summary["switch"] is None


def test_rounding_is_seen_with_two_nuclei_in_the_field_and_division_needs_daughters() -> None:
    def table(points: list[tuple[float, float, float, float]]) -> ObjectTable:
        n = len(points)
        return ObjectTable(
            shape=(SIZE, SIZE),
            label=np.arange(1, n + 1, dtype=np.int32),
            area_px=np.array([p[3] for p in points]),
            centroid_row=np.array([p[0] for p in points]),
            centroid_col=np.array([p[1] for p in points]),
            mean_intensity=np.array([p[2] for p in points]),
            bbox=np.zeros((n, 4), np.int64),
        )

    def view(t: ObjectTable, previous: EventView | None) -> EventView:
        rows, cols = t.centroid_row * PX, t.centroid_col * PX
        return EventView(t, cols, rows, np.ones(len(t), bool), previous)

    rounding = RoundingDetector()
    division = DivisionDetector(rounding)
    far = (20.0, 20.0, DIM, 80.0)  # the only other nucleus in a sparse field
    quiet = view(table([(CENTRE, CENTRE, DIM, 80.0), far]), None)
    rounded = view(table([(CENTRE, CENTRE, BRIGHT, 50.0), far]), quiet)
    assert rounding.detect(rounded)
    pieces = view(
        table([(CENTRE - 4, CENTRE, DIM, 20.0), (CENTRE + 4, CENTRE, DIM, 20.0), far]), rounded
    )
    assert not division.detect(pieces)  # condensed chromatin split by the segmentation
    daughters = view(
        table([(CENTRE - 6, CENTRE, DIM, 70.0), (CENTRE + 6, CENTRE, DIM, 70.0), far]), rounded
    )
    assert division.detect(daughters)
    later = view(daughters.objects, daughters)
    assert not division.detect(later)  # the division fires on the first frame showing it


def test_a_fresh_onset_while_fast_restarts_the_time_limit_within_rearm_limit() -> None:
    """A false trigger's stretch that the same cell's real rounding follows: the onset gives
    the event a fresh ``max_fast_s``, at most ``rearm_limit`` x ``max_fast_s`` in all."""
    # the division seen only as daughters: here a rounding that fades back is no division
    rounding = RoundingDetector()
    detectors = (rounding, DivisionDetector(rounding, conserved=None))
    pol = EventTriggeredPolicy(
        [("a", 1000.0, 500.0)],
        rules(max_fast_s=3.0, cooldown_s=10.0, end_on=("division",)),
        detectors,
    )
    state = pol.initial_state()
    pol.first_commands(state)
    state, _ = pol.decide(state, frame(0), QUIET)
    state, d = pol.decide(state, frame(1), ROUNDED)  # fast from 4 s
    assert d.summary["switch"] == "to fast"
    switches = []
    sequence = [QUIET, ROUNDED, ROUNDED, QUIET, ROUNDED, ROUNDED, ROUNDED]
    for t, objs in enumerate(sequence, start=2):
        state, d = pol.decide(state, frame(t, m=1, z=1), objs)
        switches.append((t + 2, d.summary["switch"]))  # frame t is due at t + 2 s
    # onsets at 5 s (the limit counts from 5) and 8 s (capped: from 7, so the stretch ends
    # 2 x 3 s after it began at 4 s)
    assert switches == [(4, None), (5, None), (6, None), (7, None), (8, None), (9, None),
                        (10, "to gentle: time limit")]  # fmt: skip
    without = EventTriggeredPolicy(
        [("a", 1000.0, 500.0)],
        rules(max_fast_s=3.0, cooldown_s=10.0, end_on=("division",), rearm_limit=1.0),
        detectors,
    )
    state = without.initial_state()
    without.first_commands(state)
    state, _ = without.decide(state, frame(0), QUIET)
    state, _ = without.decide(state, frame(1), ROUNDED)
    for t, objs in enumerate([QUIET, ROUNDED, ROUNDED, QUIET], start=2):
        state, d = without.decide(state, frame(t, m=1, z=1), objs)
    assert d.summary["switch"] == "to gentle: time limit"  # at 7 s: 3 s after 4 s


def _table(points: list[tuple[float, float, float, float]]) -> ObjectTable:
    """(row, col, mean intensity, area) per object."""
    n = len(points)
    return ObjectTable(
        shape=(SIZE, SIZE),
        label=np.arange(1, n + 1, dtype=np.int32),
        area_px=np.array([p[3] for p in points]),
        centroid_row=np.array([p[0] for p in points]),
        centroid_col=np.array([p[1] for p in points]),
        mean_intensity=np.array([p[2] for p in points]),
        bbox=np.zeros((n, 4), np.int64),
    )


def _view(t: ObjectTable, previous: EventView | None, exposure_ms: float = 10.0) -> EventView:
    return EventView(
        t, t.centroid_col * PX, t.centroid_row * PX, np.ones(len(t), bool), previous, exposure_ms
    )


def test_a_lone_nucleus_rounding_is_seen_between_frames_of_the_same_exposure() -> None:
    rounding = RoundingDetector()
    quiet = _view(_table([(CENTRE, CENTRE, DIM, 80.0)]), None)
    assert rounding.detect(_view(_table([(CENTRE, CENTRE, BRIGHT, 50.0)]), quiet))
    # another exposure and no other nucleus to compare with: cannot tell
    other = _view(_table([(CENTRE, CENTRE, BRIGHT, 50.0)]), quiet, exposure_ms=50.0)
    assert not rounding.detect(other)


def test_a_rounding_merged_with_a_neighbour_is_compared_with_its_own_previous_self() -> None:
    """The rounded nucleus touches a neighbour: their blob lies nearer the neighbour's last
    place, but the one-to-one links give the blob the rounded cell's past (larger, dimmer),
    and a strong brightening without growth is an onset."""
    corners = [(r, c, DIM, 80.0) for r, c in BACKGROUND]
    before = _view(
        _table([(CENTRE, CENTRE, DIM, 100.0), (CENTRE, CENTRE + 10, DIM, 60.0), *corners]), None
    )
    blob = _table([(CENTRE, CENTRE + 6, BRIGHT, 95.0), (CENTRE, CENTRE + 13, DIM, 60.0), *corners])
    assert RoundingDetector().rounded(_view(blob, before))[0]
    assert not RoundingDetector().rounded(_view(blob, before))[1:].any()


def test_a_rounding_that_grows_back_into_one_object_with_its_light_is_a_division() -> None:
    """The daughters stay touching, one object, for several frames: a rounded nucleus that
    grew back (larger by more than 1 / shrink) holding about its own light ended its event;
    not across two exposures, not where a neighbour lost its object into it (a merge), not
    with far more light."""
    rounding = RoundingDetector()
    division = DivisionDetector(rounding)
    corners = [(r, c, DIM, 80.0) for r, c in BACKGROUND]
    quiet = _view(_table([(CENTRE, CENTRE, DIM, 80.0), *corners]), None)
    rounded = _view(_table([(CENTRE, CENTRE, BRIGHT, 50.0), *corners]), quiet)
    assert rounding.detect(rounded)
    touching = _table([(CENTRE, CENTRE, 0.45 * BRIGHT, 110.0), *corners])  # light x 0.99
    assert division.where(_view(touching, rounded))[0]
    assert not division.detect(_view(touching, rounded, exposure_ms=50.0))
    assert not DivisionDetector(rounding, conserved=None).detect(_view(touching, rounded))
    brighter = _table([(CENTRE, CENTRE, 0.7 * BRIGHT, 110.0), *corners])  # light x 1.54
    assert not division.detect(_view(brighter, rounded))
    # the rounded nucleus beside a small neighbour, then one blob of them both
    beside = _view(
        _table([(CENTRE, CENTRE, BRIGHT, 50.0), (CENTRE, CENTRE + 10, DIM, 30.0), *corners]),
        rounded,
    )
    assert rounding.detect(beside)
    merged = _table([(CENTRE, CENTRE + 2, 0.9 * BRIGHT, 70.0), *corners])  # light x 1.26
    assert not division.detect(_view(merged, beside))


def test_the_objects_of_an_event_that_ended_wait_cooldown_s_but_others_do_not() -> None:
    """After a division ended an event, its daughters splitting off the blob they left look
    like a fresh rounding: they wait ``cooldown_s``; a rounding elsewhere in the region
    switches at once."""
    pol = policy(end_on=("division",), after_frames=0, cooldown_s=20.0)
    state = pol.initial_state()
    pol.first_commands(state)
    state, _ = pol.decide(state, frame(0), QUIET)
    state, d = pol.decide(state, frame(1), ROUNDED)  # 4 s
    assert d.summary["switch"] == "to fast"
    state, d = pol.decide(state, frame(2, m=1, z=1), DIVIDED)  # 4 s: muted until 24 s
    assert d.summary["switch"] == "to gentle: event over"
    there, elsewhere = (CENTRE, CENTRE), (CENTRE + 30, CENTRE + 30)  # 15 µm apart, both in
    state, _ = pol.decide(state, frame(3), objects([(*there, DIM), (*elsewhere, DIM)]))  # 8 s
    state, d = pol.decide(state, frame(4), objects([(*there, BRIGHT), (*elsewhere, DIM)]))
    assert d.summary["fired"] == ["rounding"] and d.summary["switch"] is None  # 12 s: muted
    state, d = pol.decide(state, frame(5), objects([(*there, BRIGHT), (*elsewhere, BRIGHT)]))
    assert d.summary["switch"] == "to fast"  # 16 s: a rounding elsewhere
