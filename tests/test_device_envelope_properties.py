"""Properties of the external devices' envelope: whatever pump run or stimulation pattern is
asked for, and whatever limits the envelope sets, an accepted one keeps to every limit, its
counted dose is what its light delivers at most, and the mask the edge draws lights nothing
outside its spots or the field."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scopeflow import EnvelopeViolation, PumpRun, Stimulate, StimulationSpot
from tasks.hardware import DeviceLimits, PumpLimits, StimulatorLimits, pattern_mask

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
