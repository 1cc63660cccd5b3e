"""External devices (a syringe pump, a DMD) as envelope-checked actions on an event, against a
real `edge serve --simulate` process: accepted actions change the sample's ground truth (a drug
slows its biology, a stimulated cell's reporter brightens), refused ones are 422 naming the
limit and move nothing, a command id runs once, and the audit log names the device actions."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scopeflow import (
    EdgeRejected,
    PumpRun,
    Stimulate,
    StimulationSpot,
    pump_event,
    stimulation_event,
)
from tasks.hardware import AuditLog, EdgeClient, EdgeProcess
from tasks.hardware.sim import SimulatorConfig, VirtualSample

CAMERA = 256
TIME_SCALE = 60.0
SEED = 3
POWER_MW = 40.0
ENVELOPE = """\
allowed_actions: [acquire_image, custom]
light_dose_budget_mj: 500.0
devices:
  pumps:
    Pump: {allowed_reservoirs: [medium, drug], max_volume_ul: 300, max_flow_ul_per_min: 600}
  stimulators:
    DMD: {power_mw: 40.0, max_intensity_percent: 80, max_duration_ms: 2000, max_dose_mj: 0.5}
"""


@pytest.fixture(scope="module")
def devices_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    root = tmp_path_factory.mktemp("devices")
    envelope = root / "envelope.yaml"
    envelope.write_text(ENVELOPE)
    args = [
        "--camera-size", str(CAMERA), "--time-scale", str(TIME_SCALE), "--seed", str(SEED),
        "--envelope", str(envelope),
    ]  # fmt: skip
    edge = EdgeProcess(root / "edge", extra_args=args, startup_timeout=240).start()
    try:
        yield edge
    finally:
        edge.stop()


@pytest.fixture()
def client(devices_edge: EdgeProcess) -> Iterator[EdgeClient]:
    with EdgeClient(devices_edge.url, token_file=devices_edge.token_file) as c:
        yield c


def _cid(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def _devices(client: EdgeClient) -> dict:
    return client.truth((0.0, 0.0, 1.0, 1.0))["devices"]


def _field(client: EdgeClient) -> tuple[float, float, float, float]:
    state = client.state()
    half_w = state.image_width * state.pixel_size_um / 2
    half_h = state.image_height * state.pixel_size_um / 2
    x, y = state.stage.x, state.stage.y
    return x - half_w, y - half_h, x + half_w, y + half_h


def _run(client: EdgeClient, event: object, command_id: str) -> None:
    client.submit_events([event], command_id=command_id)
    client.wait_until_idle()
    done = client.command_status(command_id).done
    assert done is not None and done.outcome == "completed", client.command_status(command_id)


def test_a_stimulation_lights_only_the_cells_in_its_spots(client: EdgeClient) -> None:
    client.move_stage(4_000.0, 4_000.0, 0.0)
    x0, y0, x1, y1 = _field(client)
    margin = 20.0
    cells = client.truth((x0 + margin, y0 + margin, x1 - margin, y1 - margin))["cells"]
    assert cells, "no cell well inside the field: pick another position"
    target = cells[0]
    dose_before = client.state().light_dose.used_mj
    stimulate = Stimulate(
        spots=(StimulationSpot(x_um=target["x_um"], y_um=target["y_um"], radius_um=4.0),),
        intensity=60.0,
        duration_ms=500.0,
    )
    _run(client, stimulation_event(stimulate), _cid("stim"))

    truth = client.truth((x0, y0, x1, y1))
    stimulated = {c["id"]: c for c in truth["devices"]["stimulation"]["stimulated_cells"]}
    assert target["ids"] in stimulated
    assert stimulated[target["ids"]]["stim_dose"] == pytest.approx(500.0 * 0.6)
    assert stimulated[target["ids"]]["activation"] > 0.5
    for cell in truth["cells"]:  # the cells whose centre lies under the spot, and only those
        distance = math.hypot(cell["x_um"] - target["x_um"], cell["y_um"] - target["y_um"])
        if distance < 3.5:
            assert cell["ids"] in stimulated
        elif distance > 4.7:
            assert cell["ids"] not in stimulated
    # the reporter: GFP against the same sample unperturbed (a local copy, same seed and time)
    local = VirtualSample(SimulatorConfig(seed=SEED, width=CAMERA, height=CAMERA))
    plain = local.cells_at(truth["t_s"], (x0, y0, x1, y1))
    ratio = {
        c["ids"]: c["brightness_gfp"] / plain.brightness_gfp[k]
        for c in truth["cells"]
        if (k := np.flatnonzero(plain.ids == c["ids"])).size
    }
    assert ratio[target["ids"]] > 1.5
    assert all(r == pytest.approx(1.0) for i, r in ratio.items() if i not in stimulated)
    field = (x1 - x0) * (y1 - y0)
    expected = POWER_MW * math.pi * 16.0 / field * 0.6 * 0.5
    assert client.state().light_dose.used_mj - dose_before == pytest.approx(expected, rel=1e-3)


def test_the_drug_slows_the_sample_from_the_end_of_the_infusion(client: EdgeClient) -> None:
    run = PumpRun(reservoir="drug", volume_ul=150.0, flow_ul_per_min=600.0)
    command_id = _cid("pump")
    _run(client, pump_event(run), command_id)
    infusions = _devices(client)["perfusion"]["infusions"]
    assert len(infusions) == 1
    infusion = infusions[0]
    assert infusion["reservoir"] == "drug" and infusion["volume_ul"] == 150.0
    assert infusion["t_end_s"] - infusion["t_start_s"] == pytest.approx(15.0)
    assert infusion["acting"] == ["drug"] and infusion["biology_rate"] == pytest.approx(0.1)

    # the same command id again: nothing more is pumped
    ack = client.submit_events([pump_event(run)], command_id=command_id)
    assert ack.repeat
    assert len(_devices(client)["perfusion"]["infusions"]) == 1

    # the truth follows a biological clock: identical before the drug acts, 10x slower after
    t_end = infusion["t_end_s"]
    local = VirtualSample(SimulatorConfig(seed=SEED, width=CAMERA, height=CAMERA))
    region = (3_000.0, 3_000.0, 5_000.0, 5_000.0)
    for t_real, t_bio in ((t_end - 5.0, t_end - 5.0), (t_end + 3_000.0, t_end + 300.0)):
        edge_cells = client.truth(region, t_s=t_real)["cells"]
        assert edge_cells, "no cells in the region"
        expected = local.cells_at(t_bio, region)
        moved = local.cells_at(t_real, region)
        ids = np.array([c["ids"] for c in edge_cells])
        assert np.array_equal(ids, expected.ids)
        x = np.array([c["x_um"] for c in edge_cells])
        assert np.allclose(x, expected.x_um, atol=1e-3)
        if t_real > t_end:  # without the drug the cells would have moved on
            common = np.intersect1d(ids, moved.ids)
            k_edge = np.searchsorted(ids, common)
            k_free = np.searchsorted(moved.ids, common)
            assert np.abs(x[k_edge] - moved.x_um[k_free]).max() > 1.0


REFUSED = [
    (pump_event(PumpRun(reservoir="drug", volume_ul=301, flow_ul_per_min=100)),
     "devices.pumps.Pump.max_volume_ul"),
    (pump_event(PumpRun(reservoir="drug", volume_ul=10, flow_ul_per_min=601)),
     "devices.pumps.Pump.max_flow_ul_per_min"),
    (pump_event(PumpRun(reservoir="fixative", volume_ul=10, flow_ul_per_min=100)),
     "devices.pumps.Pump.allowed_reservoirs"),
    (pump_event(PumpRun(device="Pump2", reservoir="drug", volume_ul=10, flow_ul_per_min=100)),
     "devices.pumps"),
    (stimulation_event(Stimulate(spots=(StimulationSpot(x_um=4_500, y_um=4_000, radius_um=5),),
                                 intensity=50, duration_ms=100)),
     "devices.stimulators.DMD.field_of_view"),
    (stimulation_event(Stimulate(spots=(StimulationSpot(x_um=4_000, y_um=4_000, radius_um=5),),
                                 intensity=90, duration_ms=100)),
     "devices.stimulators.DMD.max_intensity_percent"),
    (stimulation_event(Stimulate(spots=(StimulationSpot(x_um=4_000, y_um=4_000, radius_um=5),),
                                 intensity=50, duration_ms=5_000)),
     "devices.stimulators.DMD.max_duration_ms"),
    (stimulation_event(Stimulate(spots=(StimulationSpot(x_um=4_000, y_um=4_000, radius_um=70),),
                                 intensity=80, duration_ms=2_000)),
     "devices.stimulators.DMD.max_dose_mj"),
    (stimulation_event(Stimulate(device="SLM", spots=(StimulationSpot(x_um=4_000, y_um=4_000,
                                 radius_um=5),), intensity=50, duration_ms=100)),
     "devices.stimulators"),
    ({"action": {"type": "custom", "name": "valve", "data": {}}}, "custom_action"),
    ({"action": {"type": "custom", "name": "pump", "data": {"reservoir": "drug",
      "volume_ul": -1, "flow_ul_per_min": 10}}}, "custom_action"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "limit"), REFUSED)
def test_a_device_action_outside_the_envelope_is_refused_and_nothing_moves(
    client: EdgeClient, event: object, limit: str
) -> None:
    client.move_stage(4_000.0, 4_000.0, 0.0)
    client.wait_until_idle()
    devices, state = _devices(client), client.state()
    with pytest.raises(EdgeRejected) as info:  # a stimulation after a good event: all refused
        client.submit_events([{"channel": "BF", "exposure": 1.0}, event], command_id=_cid("bad"))
    assert info.value.status_code == 422
    assert info.value.detail["limit"] == limit, info.value.detail
    after = _devices(client)
    assert len(after["perfusion"]["infusions"]) == len(devices["perfusion"]["infusions"])
    assert len(after["stimulation"]["patterns"]) == len(devices["stimulation"]["patterns"])
    now = client.state()
    assert now.frames_acquired == state.frames_acquired and now.queue_depth == 0
    assert now.light_dose.used_mj == state.light_dose.used_mj


def test_a_stimulation_moves_to_its_position_first_and_the_audit_names_it(
    client: EdgeClient, devices_edge: EdgeProcess
) -> None:
    spot = StimulationSpot(x_um=6_000.0, y_um=6_000.0, radius_um=3.0)
    event = stimulation_event(
        Stimulate(spots=(spot,), intensity=20.0, duration_ms=50.0), x_pos=6_000.0, y_pos=6_000.0
    )
    command_id = _cid("stim-at")
    _run(client, event, command_id)
    pattern = _devices(client)["stimulation"]["patterns"][-1]
    assert pattern["stage"] == [6_000.0, 6_000.0]
    assert 0 < pattern["on_fraction"] < 0.01
    records = [r for r in AuditLog.read(Path(devices_edge.data_dir) / "audit.jsonl")]
    mine = [r for r in records if r.get("command_id") == command_id]
    assert mine and mine[0]["device_actions"] == "stimulate" and mine[0]["status"] == 200


def test_the_default_envelope_refuses_every_device(tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", extra_args=["--camera-size", "32"]).start()
    with edge, EdgeClient(edge.url, token_file=edge.token_file) as client:
        run = pump_event(PumpRun(reservoir="medium", volume_ul=1, flow_ul_per_min=10))
        with pytest.raises(EdgeRejected) as info:
            client.submit_events([run], command_id="pump-default")
        assert info.value.detail["limit"] == "allowed_actions"
        assert info.value.status_code == 422


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.builds(
            PumpRun,
            reservoir=st.sampled_from(["medium", "drug", "fixative"]),
            volume_ul=st.floats(1.0, 400.0),
            flow_ul_per_min=st.floats(200.0, 800.0),
        ),
        st.builds(
            Stimulate,
            spots=st.lists(
                st.builds(
                    StimulationSpot,
                    x_um=st.floats(3_900.0, 4_100.0),
                    y_um=st.floats(3_900.0, 4_100.0),
                    radius_um=st.floats(1.0, 60.0),
                ),
                min_size=1,
                max_size=3,
            ).map(tuple),
            intensity=st.floats(0.0, 100.0),
            duration_ms=st.floats(1.0, 3_000.0),
        ),
    )
)
def test_no_accepted_device_action_exceeds_the_envelope_on_the_edge(
    devices_edge: EdgeProcess, action: PumpRun | Stimulate
) -> None:
    with EdgeClient(devices_edge.url, token_file=devices_edge.token_file) as client:
        client.move_stage(4_000.0, 4_000.0, command_id=_cid("prop-move"))
        client.wait_until_idle()
        before = _devices(client)
        event = pump_event(action) if isinstance(action, PumpRun) else stimulation_event(action)
        try:
            client.submit_events([event], command_id=_cid("prop"))
        except EdgeRejected as exc:
            assert exc.status_code == 422 and exc.detail["limit"].startswith("devices.")
            after = _devices(client)
            assert after["perfusion"]["infusions"] == before["perfusion"]["infusions"]
            assert after["stimulation"]["patterns"] == before["stimulation"]["patterns"]
            return
        client.wait_until_idle()
        after = _devices(client)
    for infusion in after["perfusion"]["infusions"]:  # every run that happened, accepted or not
        assert infusion["reservoir"] in ("medium", "drug")
        assert infusion["volume_ul"] <= 300 and infusion["flow_ul_per_min"] <= 600
    for pattern in after["stimulation"]["patterns"]:
        assert pattern["intensity"] <= 80 and pattern["duration_ms"] <= 2_000
        delivered = POWER_MW * pattern["on_fraction"] * pattern["intensity"] / 100
        assert delivered * pattern["duration_ms"] / 1_000 <= 0.5 * 1.0001  # max_dose_mj
