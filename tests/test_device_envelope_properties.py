"""Properties of the external devices' envelope: whatever pump run or stimulation pattern is
asked for, and whatever limits the envelope sets, an accepted one keeps to every limit, its
counted dose is what its light delivers at most, and the mask the edge draws lights nothing
outside its spots or the field; no accepted sequence of pump runs (queued, run, dropped, across
restarts) passes a pump's cumulative volume limits, and no pump run accepted at submit time is
certain to overlap the one before on its pump."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import useq
from hypothesis import given, settings
from hypothesis import strategies as st

from scopeflow import EnvelopeViolation, PumpRun, Stimulate, StimulationSpot, pump_event
from tasks.hardware import (
    DeviceLimits,
    PumpLedger,
    PumpLimits,
    StimulatorLimits,
    check_pump_timing,
    pattern_mask,
)

RESERVOIRS = ("medium", "drug", "fixative", "wash")
DEVICES = ("Pump", "Pump2", "DMD", "SLM")
finite = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False)


@st.composite
def limits(draw: st.DrawFn) -> DeviceLimits:
    pumps = {
        name: PumpLimits(
            allowed_reservoirs=frozenset(
                draw(st.sets(st.sampled_from(RESERVOIRS), min_size=1, max_size=3))
            ),
            max_volume_ul=draw(finite),
            max_flow_ul_per_min=draw(finite),
        )
        for name in draw(st.sets(st.sampled_from(DEVICES[:2]), max_size=2))
    }
    stimulators = {
        name: StimulatorLimits(
            power_mw=draw(st.floats(0, 500)),
            max_intensity_percent=draw(st.floats(0, 100)),
            max_duration_ms=draw(finite),
            max_dose_mj=draw(finite),
        )
        for name in draw(st.sets(st.sampled_from(DEVICES[2:]), max_size=2))
    }
    return DeviceLimits(pumps=pumps, stimulators=stimulators)


pump_runs = st.builds(
    PumpRun,
    device=st.sampled_from(DEVICES[:2]),
    reservoir=st.sampled_from(RESERVOIRS),
    volume_ul=finite,
    flow_ul_per_min=finite,
)
spots = st.builds(
    StimulationSpot,
    x_um=st.floats(-300, 300),
    y_um=st.floats(-300, 300),
    radius_um=st.floats(0.5, 150),
)
stimulations = st.builds(
    Stimulate,
    device=st.sampled_from(DEVICES[2:]),
    spots=st.lists(spots, min_size=1, max_size=4).map(tuple),
    intensity=st.floats(0, 100),
    duration_ms=finite,
)
FIELD = (332.8, 332.8)  # 512 px at 0.65 µm


@settings(max_examples=400, deadline=None)
@given(limits(), st.one_of(pump_runs, stimulations))
def test_no_accepted_device_action_exceeds_the_envelope(
    envelope: DeviceLimits, action: PumpRun | Stimulate
) -> None:
    try:
        dose = envelope.check(action, (0.0, 0.0), FIELD, "property")
    except EnvelopeViolation as exc:
        assert exc.limit.startswith("devices.")
        return
    if isinstance(action, PumpRun):
        pump = envelope.pumps[action.device]
        assert action.reservoir in pump.allowed_reservoirs
        assert action.volume_ul <= pump.max_volume_ul
        assert action.flow_ul_per_min <= pump.max_flow_ul_per_min
        assert dose == 0.0
        return
    device = envelope.stimulators[action.device]
    assert action.intensity <= device.max_intensity_percent
    assert action.duration_ms <= device.max_duration_ms
    for spot in action.spots:
        assert abs(spot.x_um) + spot.radius_um <= FIELD[0] / 2
        assert abs(spot.y_um) + spot.radius_um <= FIELD[1] / 2
    assert dose <= device.max_dose_mj
    full = device.power_mw * action.intensity / 100 * action.duration_ms / 1000
    lit = sum(math.pi * s.radius_um**2 for s in action.spots) / (FIELD[0] * FIELD[1])
    assert math.isclose(dose, full * min(lit, 1.0), rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(spots, min_size=1, max_size=3).map(tuple),
    st.sampled_from([1.0, -1.0]),
    st.sampled_from([1.0, -1.0]),
    st.floats(0.1, 2.0),
)
def test_the_mask_lights_only_inside_its_spots(
    pattern: tuple[StimulationSpot, ...], sx: float, sy: float, px: float
) -> None:
    shape = (96, 128)
    stage = (10.0, -20.0)
    stimulate = Stimulate(spots=pattern, intensity=10, duration_ms=1)
    mask = pattern_mask(stimulate, stage, (sx * px, 0.0, 0.0, 0.0, sy * px, 0.0), shape)
    rows, cols = np.nonzero(mask)
    x = stage[0] + sx * px * (cols - (shape[1] - 1) / 2)
    y = stage[1] + sy * px * (rows - (shape[0] - 1) / 2)
    inside = np.zeros(rows.size, bool)
    for spot in pattern:
        inside |= np.hypot(x - spot.x_um, y - spot.y_um) <= spot.radius_um + 1e-9
    assert inside.all()
    for spot in pattern:  # and each spot's centre pixel is lit when it is on the device
        col = round((spot.x_um - stage[0]) / (sx * px) + (shape[1] - 1) / 2)
        row = round((spot.y_um - stage[1]) / (sy * px) + (shape[0] - 1) / 2)
        near = math.hypot(
            stage[0] + sx * px * (col - (shape[1] - 1) / 2) - spot.x_um,
            stage[1] + sy * px * (row - (shape[0] - 1) / 2) - spot.y_um,
        )
        if 0 <= row < shape[0] and 0 <= col < shape[1] and near <= spot.radius_um:
            assert mask[row, col] == 255


volumes = st.floats(0.5, 400.0) | st.integers(1, 400).map(float)
ledger_runs = st.builds(
    PumpRun,
    device=st.sampled_from(DEVICES[:2]),
    reservoir=st.sampled_from(RESERVOIRS[:2]),
    volume_ul=volumes,
    flow_ul_per_min=st.just(100.0),
)


@st.composite
def cumulative_limits(draw: st.DrawFn) -> dict[str, PumpLimits]:
    caps = st.none() | st.floats(1.0, 1500.0)
    return {
        name: PumpLimits(
            allowed_reservoirs=frozenset(RESERVOIRS[:2]),
            max_volume_ul=400.0,
            max_flow_ul_per_min=100.0,
            max_total_volume_ul=draw(caps),
            max_total_volume_ul_by_reservoir={
                r: cap for r in RESERVOIRS[:2] if (cap := draw(caps)) is not None
            },
        )
        for name in DEVICES[:2]
    }


def _within(ledger: PumpLedger, pumps: dict[str, PumpLimits]) -> None:
    for name, pump in pumps.items():
        use = ledger.use(name)
        if pump.max_total_volume_ul is not None:
            assert use.total_ul <= pump.max_total_volume_ul + 1e-9
        for reservoir, cap in pump.max_total_volume_ul_by_reservoir.items():
            assert use.by_reservoir_ul.get(reservoir, 0.0) <= cap + 1e-9


@settings(max_examples=150, deadline=None)
@given(
    cumulative_limits(),
    st.lists(
        st.tuples(
            st.lists(ledger_runs, min_size=1, max_size=4),  # a command's runs
            st.lists(st.booleans(), min_size=4, max_size=4),  # each queued run: run or dropped
            st.booleans(),  # the edge restarts (kill -9) after this command
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_no_accepted_sequence_of_pump_runs_exceeds_the_cumulative_limits(
    pumps: dict[str, PumpLimits], commands: list[tuple[list[PumpRun], list[bool], bool]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = PumpLedger(Path(tmp))
        pumped: dict[tuple[str, str], float] = {}
        for runs, fates, restart in commands:
            try:
                ledger.reserve(runs, pumps)
            except EnvelopeViolation as exc:
                assert ".max_total_volume_ul" in exc.limit, exc.limit
                assert {"requested_ul", "used_ul", "left_ul"} <= set(exc.value)  # type: ignore[arg-type]
                continue
            for run, runs_now in zip(runs, fates, strict=False):
                ledger.release(run)
                if runs_now:  # a run accepted when queued is never refused when it runs
                    ledger.charge(run, pumps)
                    key = (run.device, run.reservoir)
                    pumped[key] = pumped.get(key, 0.0) + run.volume_ul
            _within(ledger, pumps)
            if restart:
                ledger = PumpLedger(Path(tmp))  # what is on disk is all there is
            for (device, reservoir), volume in pumped.items():
                got = ledger.use(device).by_reservoir_ul.get(reservoir, 0.0)
                assert volume - 1e-9 <= got <= volume + 1e-3 * len(commands) * 4  # whole nL, up
        _within(ledger, pumps)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DEVICES[:2]),
            st.floats(0.5, 100.0),  # volume, µL
            st.floats(1.0, 600.0),  # flow, µL/min
            st.none() | st.floats(0.0, 120.0),  # min_start_time, s
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([1.0, 60.0]),
)
def test_no_pump_run_accepted_when_sent_is_certain_to_overlap(
    plan: list[tuple[str, float, float, float | None]], time_scale: float
) -> None:
    events = [
        pump_event(
            PumpRun(device=d, reservoir="medium", volume_ul=v, flow_ul_per_min=f),
            min_start_time=t,
        )
        for d, v, f, t in plan
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ledger = PumpLedger(Path(tmp))  # every pump idle
        try:
            check_pump_timing(events, ledger, time_scale=time_scale, idle=True)
        except EnvelopeViolation as exc:
            assert exc.limit.endswith(".busy")
            accepted = False
        else:
            accepted = True
    # pump runs take no time on the acquisition thread: each starts at its min_start_time or
    # right after the one before, whichever is later
    start, ends, overlap = 0.0, {}, False
    for d, v, f, t in plan:
        start = max(start, t or 0.0)
        overlap |= start < ends.get(d, -math.inf)
        ends[d] = start + v / f * 60.0 / time_scale
    assert accepted == (not overlap)


def test_an_acquisition_between_two_runs_leaves_the_overlap_to_the_pump() -> None:
    run = PumpRun(volume_ul=100.0, flow_ul_per_min=1.0, reservoir="medium")
    with tempfile.TemporaryDirectory() as tmp:
        ledger = PumpLedger(Path(tmp))
        with pytest.raises(EnvelopeViolation, match="min_start_time of at least 6000 s"):
            check_pump_timing([pump_event(run)] * 2, ledger, time_scale=1.0, idle=True)
        image = useq.MDAEvent(exposure=1.0)  # it may take any time: not certain
        check_pump_timing(
            [pump_event(run), image, pump_event(run)], ledger, time_scale=1.0, idle=True
        )


def test_a_reservoir_limit_must_name_an_allowed_reservoir() -> None:
    with pytest.raises(ValueError, match=r"names \['wash'\], which are not in allowed_reservoirs"):
        PumpLimits(
            allowed_reservoirs=frozenset({"medium"}),
            max_volume_ul=10,
            max_flow_ul_per_min=10,
            max_total_volume_ul_by_reservoir={"wash": 5},
        )
