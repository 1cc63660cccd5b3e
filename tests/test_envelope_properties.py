"""Property tests of the safety envelope (hypothesis): no accepted command or sequence of
commands moves the stage or illuminates outside the envelope, whatever the numbers (NaN,
infinities, huge, negative), the axes a move leaves out, the autofocus corrections added to
later Z, or the settings changed between submitting and taking a frame.

The envelope's checks, the dose ledger and the run-time guard are the edge's own; the guard
runs against the real simulated microscope core (pure-Python devices; no frame is taken).
Deterministic by default (``derandomize``); ``SCOPEFLOW_HYPOTHESIS_PROFILE=random`` draws new
cases each run. Together they check over 10,000 generated events, commands and envelopes
(`CASES`, printed with ``-s``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import useq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from scopeflow import EnvelopeViolation
from tasks.hardware import DoseLedger, EnvelopeGuard, HardwareContext, SafetyEnvelope
from tasks.hardware.sim import SimulatorConfig, build_simulated_core

settings.register_profile(
    "derandomized",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "random",
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("SCOPEFLOW_HYPOTHESIS_PROFILE", "derandomized"))

EVENT_EXAMPLES = 2_000  # batches of 1-4 events
MACHINE_EXAMPLES = 300  # runs of up to 12 commands
GUARD_EXAMPLES = 2_000
LOAD_EXAMPLES = 1_000
CASES: Counter[str] = Counter()
"""Generated commands, events and envelopes each test checked (the README's figure)."""

ENVELOPE = SafetyEnvelope(
    x_limits_um=(1_000.0, 9_000.0),
    y_limits_um=(2_000.0, 8_000.0),
    z_limits_um=(-50.0, 50.0),
    max_exposure_ms=500.0,
    max_intensity_percent=80.0,
    light_dose_budget_mj=40.0,
    channel_power_mw={"BF": 0.0, "DAPI": 20.0, "GFP": 30.0},
    autofocus_offset_limits=(-10.0, 10.0),
)
CHANNEL_GROUP = "Channel"
INTENSITY = ("Illumination", "Intensity")

# numbers as an attacker sends them: near the limits, far outside, NaN, infinities
wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 999.999, 9_000.0001, -50.1]),
    st.floats(-100.0, 10_000.0),
)
# mostly numbers the envelope may take (near its edges too), often wild ones
number = st.one_of(st.floats(-50.0, 50.0), st.floats(0.0, 9_000.0), st.just(1_000.0), wild)
maybe = st.one_of(st.none(), st.floats(-50.0, 9_000.0), wild)
channels = st.sampled_from(["BF", "DAPI", "GFP", "Cy5", ""])


def _inside(x: float, y: float, z: float) -> bool:
    (x0, x1), (y0, y1), (z0, z1) = ENVELOPE.x_limits_um, ENVELOPE.y_limits_um, ENVELOPE.z_limits_um
    return x0 <= x <= x1 and y0 <= y <= y1 and z0 <= z <= z1


@st.composite
def events(draw: st.DrawFn) -> useq.MDAEvent:
    fields: dict[str, object] = {}
    for key in ("x_pos", "y_pos", "z_pos", "exposure"):
        if draw(st.booleans()):
            fields[key] = draw(number)
    if draw(st.booleans()):
        fields["channel"] = {"config": draw(channels)}
    if draw(st.booleans()):
        value = draw(st.one_of(number, st.text(max_size=3), st.integers(-1000, 1000)))
        fields["properties"] = [["Illumination", "Intensity", value]]
    kind = draw(st.sampled_from(["acquire", "acquire", "autofocus", "custom"]))
    if kind == "autofocus":
        offset = draw(st.one_of(st.none(), number))
        fields["action"] = useq.HardwareAutofocus(
            autofocus_motor_offset=offset, max_retries=draw(st.integers(0, 20))
        )
    elif kind == "custom":
        fields["action"] = useq.CustomAction(name="x")
    fields["keep_shutter_open"] = draw(st.sampled_from([False, False, False, True]))
    try:
        return useq.MDAEvent(**fields)
    except ValueError:  # useq itself refuses it: never reaches the envelope
        return useq.MDAEvent()


def _context(stage: tuple[float, float, float]) -> HardwareContext:
    return HardwareContext(
        channel="DAPI",
        exposure_ms=10.0,
        intensity=50.0,
        channel_group=CHANNEL_GROUP,
        intensity_property=INTENSITY,
        stage=stage,
    )


starts = st.one_of(
    st.tuples(st.floats(1_000.0, 9_000.0), st.floats(2_000.0, 8_000.0), st.floats(-50.0, 50.0)),
    st.tuples(number, number, number),
)


def test_accepted_events_are_taken_inside_the_envelope_with_a_finite_dose() -> None:
    outcomes = {"accepted": 0, "refused": 0}

    @settings(max_examples=EVENT_EXAMPLES)
    @given(batch=st.lists(events(), min_size=1, max_size=4), start=starts)
    def check(batch: list[useq.MDAEvent], start: tuple[float, float, float]) -> None:
        try:
            doses = ENVELOPE.check_events(batch, _context(start))
        except EnvelopeViolation as exc:
            assert exc.limit and str(exc)  # the refusal names the limit and says why
            outcomes["refused"] += 1
            CASES["events"] += len(batch)
            return
        outcomes["accepted"] += 1
        CASES["events"] += len(batch)
        _taken_inside(batch, doses, start)

    check()
    assert sum(outcomes.values()) >= EVENT_EXAMPLES
    assert outcomes["accepted"] >= EVENT_EXAMPLES // 20, outcomes  # not all refused


def _taken_inside(
    batch: list[useq.MDAEvent], doses: list[float], start: tuple[float, float, float]
) -> None:
    position = start
    for event, dose in zip(batch, doses, strict=True):
        position = (
            position[0] if event.x_pos is None else event.x_pos,
            position[1] if event.y_pos is None else event.y_pos,
            position[2] if event.z_pos is None else event.z_pos,
        )
        assert _inside(*position)
        assert math.isfinite(dose) and dose >= 0
        assert not event.keep_shutter_open
        if isinstance(event.action, useq.HardwareAutofocus):
            offset = event.action.autofocus_motor_offset
            assert offset is None or -10.0 <= offset <= 10.0
    assert sum(doses) <= 500.0 * 30.0 * 0.8 / 1000 * len(batch) + 1e-9


class MicroscopeModel(RuleBasedStateMachine):
    """A microscope driven only through the envelope's checks, as the edge drives it: direct
    commands, events whose frames are charged from the settings in force when taken, autofocus
    corrections added to later Z. Whatever is accepted, the stage stays inside and the used
    dose stays within the budget."""

    ledger_dir: Path
    runs = 0

    def __init__(self) -> None:
        super().__init__()
        MicroscopeModel.runs += 1
        self.stage = (5_000.0, 5_000.0, 0.0)
        self.channel: str | None = "DAPI"
        self.exposure = 10.0
        self.intensity: float | None = 50.0
        self.correction = 0.0
        MicroscopeModel.ledger_dir.joinpath(DoseLedger.FILE).unlink(missing_ok=True)
        self.ledger = DoseLedger(MicroscopeModel.ledger_dir)
        self.exposures = 0

    @rule(x=maybe, y=maybe, z=maybe)
    def move(self, x: float | None, y: float | None, z: float | None) -> None:
        CASES["commands"] += 1
        with contextlib.suppress(EnvelopeViolation):
            self.stage = ENVELOPE.check_move(self.stage, x, y, z, "move_stage")

    @rule(channel=channels, exposure=number, intensity=number)
    def direct_settings(self, channel: str, exposure: float, intensity: float) -> None:
        CASES["commands"] += 1
        for check, value, name in (
            (ENVELOPE.check_channel, channel, "channel"),
            (ENVELOPE.check_exposure, exposure, "exposure"),
            (ENVELOPE.check_intensity, intensity, "intensity"),
        ):
            try:
                check(value, "direct")  # type: ignore[operator]
            except EnvelopeViolation:
                continue
            setattr(self, name, value)

    @rule(correction=st.floats(-200.0, 200.0))
    def autofocus_found(self, correction: float) -> None:
        CASES["commands"] += 1
        self.correction = correction

    @precondition(lambda self: self.exposures < 200)
    @rule(batch=st.lists(events(), min_size=1, max_size=4))
    def submit_and_run(self, batch: list[useq.MDAEvent]) -> None:
        CASES["commands"] += 1
        context = HardwareContext(
            channel=self.channel,
            exposure_ms=self.exposure,
            intensity=self.intensity,
            channel_group=CHANNEL_GROUP,
            intensity_property=INTENSITY,
            stage=self.stage,
        )
        try:
            ENVELOPE.check_events(batch, context)
        except EnvelopeViolation:
            return
        for event in batch:  # as the engine runs them, with the guard's checks
            z = None if event.z_pos is None else event.z_pos + self.correction
            try:
                target = ENVELOPE.check_move(self.stage, event.x_pos, event.y_pos, z, "setup")
            except EnvelopeViolation:
                continue  # the event fails; nothing moved
            self.stage = target
            if event.channel is not None:
                self.channel = event.channel.config
            if event.exposure is not None:
                self.exposure = event.exposure
            for _, _, value in event.properties or ():
                self.intensity = float(value)
            if event.action is not None and not isinstance(event.action, useq.AcquireImage):
                continue
            before = self.ledger.used_mj
            try:
                _, dose = ENVELOPE.exposure_dose(
                    self.channel, self.exposure, self.intensity, "exposure"
                )
            except EnvelopeViolation:
                continue
            self.exposures += 1
            if self.ledger.charge(dose, ENVELOPE.light_dose_budget_mj):
                assert self.ledger.used_mj == pytest.approx(before + dose, abs=1e-6)
            else:
                assert self.ledger.used_mj == before

    @invariant()
    def inside_and_within_budget(self) -> None:
        assert _inside(*self.stage)
        assert 0 <= self.ledger.used_mj <= ENVELOPE.light_dose_budget_mj + 1e-9


@pytest.fixture()
def ledger_dir(tmp_path: Path) -> Iterator[Path]:
    MicroscopeModel.ledger_dir = tmp_path
    yield tmp_path


def test_no_sequence_of_commands_leaves_the_envelope_or_the_budget(ledger_dir: Path) -> None:
    MicroscopeModel.runs = 0
    machine = MicroscopeModel.TestCase
    machine.settings = settings(
        max_examples=MACHINE_EXAMPLES, stateful_step_count=12, parent=settings.default
    )
    machine().runTest()
    assert MicroscopeModel.runs >= MACHINE_EXAMPLES
    print(f"generated cases so far: {dict(CASES)}, {sum(CASES.values())} in all")


@pytest.fixture(scope="module")
def sim_core():
    core, _ = build_simulated_core(SimulatorConfig(width=64, height=64))
    yield core
    core.unloadAllDevices()


def test_the_guard_charges_the_settings_in_force_and_never_passes_the_budget(
    sim_core, tmp_path: Path
) -> None:
    """Settings changed on the microscope after a command was checked (as queued events
    without settings, then a direct command, would): the guard charges what is in force."""
    guard = EnvelopeGuard(
        sim_core,
        ENVELOPE,
        DoseLedger(tmp_path),
        channel_group=CHANNEL_GROUP,
        intensity_property=INTENSITY,
    )
    sim_core.setXYPosition(5_000.0, 5_000.0)
    sim_core.setPosition(0.0)
    runs = []

    @settings(max_examples=GUARD_EXAMPLES)
    @given(
        channel=st.sampled_from(["BF", "DAPI", "GFP"]),
        exposure=st.floats(0.001, 5_000.0),
        intensity=st.floats(0.0, 100.0),
        z_pos=st.one_of(st.none(), st.floats(-60.0, 60.0)),
        correction=st.floats(-100.0, 100.0),
    )
    def check(
        channel: str, exposure: float, intensity: float, z_pos: float | None, correction: float
    ) -> None:
        runs.append(1)
        CASES["exposures"] += 1
        sim_core.setConfig(CHANNEL_GROUP, channel)
        sim_core.setExposure(exposure)
        sim_core.setProperty(*INTENSITY, intensity)
        event = useq.MDAEvent(z_pos=z_pos)
        target_z = None if z_pos is None else z_pos + correction
        try:
            guard.before_setup(event, correction)
            assert target_z is None or -50.0 <= target_z <= 50.0
        except EnvelopeViolation as exc:
            assert exc.limit == "z_limits_um"
            assert target_z is not None and not -50.0 <= target_z <= 50.0
        before = guard.ledger.used_mj
        try:
            taken = guard.before_exposure(event)
        except EnvelopeViolation as exc:
            assert exc.limit in {"max_exposure_ms", "max_intensity_percent", "light_dose_budget_mj"}
            assert guard.ledger.used_mj == before
            return
        exposure, intensity = sim_core.getExposure(), float(sim_core.getProperty(*INTENSITY))
        assert (taken.channel, taken.exposure_ms, taken.intensity) == (channel, exposure, intensity)
        assert exposure <= 500.0 and intensity <= 80.0
        expected = ENVELOPE.channel_power_mw[channel] * intensity / 100 * exposure / 1000
        assert taken.dose_mj == pytest.approx(expected)
        assert guard.ledger.used_mj == pytest.approx(before + expected, abs=1e-6)
        assert guard.ledger.used_mj <= ENVELOPE.light_dose_budget_mj + 1e-9

    check()
    assert len(runs) >= GUARD_EXAMPLES
    assert guard.ledger.used_mj > 0  # some exposures were taken, not all refused
    reopened = DoseLedger(tmp_path)  # the used dose survives a restart
    assert reopened.used_mj == pytest.approx(guard.ledger.used_mj)


def test_an_envelope_loads_only_when_every_channel_has_a_finite_power() -> None:
    outcomes = {"loaded": 0, "refused": 0}

    @settings(max_examples=LOAD_EXAMPLES)
    @given(
        allowed=st.frozensets(st.sampled_from(["BF", "DAPI", "GFP", "Cy5"]), min_size=1),
        powered=st.dictionaries(st.sampled_from(["BF", "DAPI", "GFP", "Cy5"]), wild),
        limits=st.tuples(wild, wild),
    )
    def check(
        allowed: frozenset[str], powered: dict[str, float], limits: tuple[float, float]
    ) -> None:
        CASES["envelopes"] += 1
        try:
            envelope = SafetyEnvelope(
                allowed_channels=allowed, channel_power_mw=powered, x_limits_um=limits
            )
        except ValueError as exc:
            assert "channel_power_mw" in str(exc) or "x_limits_um" in str(exc)
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        assert allowed <= set(envelope.channel_power_mw)
        assert all(math.isfinite(p) and p >= 0 for p in envelope.channel_power_mw.values())
        low, high = envelope.x_limits_um
        assert math.isfinite(low) and math.isfinite(high) and low <= high

    check()
    assert sum(outcomes.values()) >= LOAD_EXAMPLES
    assert outcomes["loaded"] and outcomes["refused"], outcomes
    print(f"generated cases so far: {dict(CASES)}, {sum(CASES.values())} in all")
