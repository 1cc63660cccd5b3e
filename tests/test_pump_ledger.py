"""A pump's cumulative volume per sample and its busy time, against a real `edge serve
--simulate` process: the volume pumped into a sample is kept in the data dir's ``pumps.json``
(it survives kill -9), a run past ``max_total_volume_ul`` (or a reservoir's) is refused with 422
naming the limit, what was used and what is left, before anything is pumped; a run certain to
start while the pump still dispenses is refused when submitted, and one that only turns out to
overlap when it runs is refused then, with nothing pumped or counted."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from scopeflow import EdgeRejected, PumpRun, pump_event
from tasks.hardware import EdgeClient, EdgeProcess

TIME_SCALE = 60.0  # device seconds per second: a 1800 s run dispenses for 30 s
ENVELOPE = """\
allowed_actions: [acquire_image, custom]
devices:
  pumps:
    Pump:
      allowed_reservoirs: [medium, drug]
      max_volume_ul: 300
      max_flow_ul_per_min: 600
      max_total_volume_ul: 500
      max_total_volume_ul_by_reservoir: {drug: 200}
"""


def _edge(data_dir: Path) -> EdgeProcess:
    envelope = data_dir.parent / "envelope.yaml"
    envelope.write_text(ENVELOPE)
    args = ["--camera-size", "128", "--time-scale", str(TIME_SCALE), "--envelope", str(envelope)]
    return EdgeProcess(data_dir, extra_args=args, startup_timeout=240).start()


def _cid() -> str:
    return f"pump-{uuid.uuid4().hex[:12]}"


def _infusions(client: EdgeClient) -> list[dict]:
    return client.truth((0.0, 0.0, 1.0, 1.0))["devices"]["perfusion"]["infusions"]


def _pump(client: EdgeClient, reservoir: str, volume_ul: float, flow: float = 600.0) -> str:
    command_id = _cid()
    run = PumpRun(reservoir=reservoir, volume_ul=volume_ul, flow_ul_per_min=flow)
    client.submit_events([pump_event(run)], command_id=command_id)
    client.wait_until_idle()
    assert not client.command_status(command_id).failures
    time.sleep(volume_ul / flow * 60.0 / TIME_SCALE + 0.1)  # until the pump is done
    return command_id


def _refused(client: EdgeClient, reservoir: str, volume_ul: float) -> dict:
    before = len(_infusions(client))
    run = PumpRun(reservoir=reservoir, volume_ul=volume_ul, flow_ul_per_min=600.0)
    with pytest.raises(EdgeRejected) as info:
        client.submit_events([pump_event(run)], command_id=_cid())
    assert info.value.status_code == 422
    assert len(_infusions(client)) == before  # nothing pumped
    assert client.state().queue_depth == 0
    return info.value.detail  # type: ignore[return-value]


def _ledger(data_dir: Path) -> dict[str, int]:
    return json.loads((data_dir / "pumps.json").read_text())["dispensed_nl"]["Pump"]


def test_the_cumulative_volume_is_refused_past_its_limit_and_survives_a_killed_edge(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "edge"
    edge = _edge(data_dir)
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            _pump(client, "drug", 150.0)
            detail = _refused(client, "drug", 100.0)
            assert detail["limit"] == "devices.pumps.Pump.max_total_volume_ul_by_reservoir.drug"
            assert detail["value"] == {"requested_ul": 100.0, "used_ul": 150.0, "left_ul": 50.0}
            assert "150 µL used" in detail["message"] and "50 µL left" in detail["message"]
            _pump(client, "medium", 300.0)
            # two runs of one command that together pass the limit: neither is queued
            runs = [
                pump_event(PumpRun(reservoir="medium", volume_ul=30.0, flow_ul_per_min=600.0)),
                pump_event(
                    PumpRun(reservoir="medium", volume_ul=30.0, flow_ul_per_min=600.0),
                    min_start_time=10.0,
                ),
            ]
            with pytest.raises(EdgeRejected) as info:
                client.submit_events(runs, command_id=_cid())
            assert info.value.detail["limit"] == "devices.pumps.Pump.max_total_volume_ul"
            assert len(_infusions(client)) == 2
        assert _ledger(data_dir) == {"drug": 150_000, "medium": 300_000}
    finally:
        edge.stop(sig=signal.SIGKILL)  # killed, not asked to stop: the ledger is on disk

    edge = _edge(data_dir)  # the same sample's data dir
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            detail = _refused(client, "medium", 60.0)
            assert detail["limit"] == "devices.pumps.Pump.max_total_volume_ul"
            assert detail["value"] == {"requested_ul": 60.0, "used_ul": 450.0, "left_ul": 50.0}
            assert "delete pumps.json" in detail["message"]  # how a new sample resets it
            detail = _refused(client, "drug", 50.5)
            assert detail["limit"] == "devices.pumps.Pump.max_total_volume_ul_by_reservoir.drug"
            _pump(client, "drug", 50.0)  # exactly what is left
            assert _refused(client, "medium", 0.5)["value"]["left_ul"] == 0.0
            assert [i["volume_ul"] for i in _infusions(client)] == [50.0]  # a new simulation
        assert _ledger(data_dir) == {"drug": 200_000, "medium": 300_000}
    finally:
        edge.stop()


def test_a_run_certain_to_overlap_is_refused_when_sent_and_one_that_overlaps_later_when_run(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "edge"
    edge = _edge(data_dir)
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            # in one command: the second run starts before the first (20 s of pumping,
            # 1/3 s here) is in
            first = pump_event(
                PumpRun(reservoir="medium", volume_ul=20.0, flow_ul_per_min=60.0),
                reset_event_timer=True,
            )
            run = PumpRun(reservoir="medium", volume_ul=20.0, flow_ul_per_min=60.0)
            with pytest.raises(EdgeRejected) as info:
                client.submit_events([first, pump_event(run)], command_id=_cid())
            detail = info.value.detail
            assert info.value.status_code == 422
            assert detail["limit"] == "devices.pumps.Pump.busy", detail
            assert detail["value"]["busy_until_s"] == pytest.approx(1 / 3, abs=1e-3)
            assert "min_start_time of at least 0.334 s" in detail["message"]
            assert _infusions(client) == []
            # spaced as the refusal says: both run
            spaced = pump_event(run, min_start_time=2.0)
            command_id = _cid()
            client.submit_events([first, spaced], command_id=command_id)
            client.wait_until_idle()
            assert not client.command_status(command_id).failures
            assert len(_infusions(client)) == 2

            # the pump dispenses 300 µL at 10 µL/min: 1800 s of pumping, 30 s here
            time.sleep(0.5)
            long_run = PumpRun(reservoir="medium", volume_ul=300.0, flow_ul_per_min=10.0)
            client.submit_events([pump_event(long_run)], command_id=_cid())
            client.wait_until_idle()
            detail = _refused(client, "medium", 10.0)
            assert detail["limit"] == "devices.pumps.Pump.busy"
            assert 0.0 < detail["value"]["busy_for_s"] <= 30.0, detail
            assert detail["value"]["busy_until"] in detail["message"]
            assert "send it after" in detail["message"]

            # behind an acquisition the start is not certain: accepted, and refused when it
            # comes up with the pump still dispensing (the last line of defence), not counted
            command_id = _cid()
            bf = {"channel": "BF", "exposure": 1.0}
            short = PumpRun(reservoir="medium", volume_ul=10.0, flow_ul_per_min=600.0)
            client.submit_events([bf, pump_event(short)], command_id=command_id)
            client.wait_until_idle()
            failures = client.command_status(command_id).failures
            assert [f.event_number for f in failures] == [1]
            assert "still dispensing" in failures[0].error
            assert len(_infusions(client)) == 3
        assert _ledger(data_dir) == {"medium": 340_000}
    finally:
        edge.stop()
