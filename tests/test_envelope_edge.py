"""The safety envelope and bad input against a real `edge serve --simulate` process: the dose
budget cannot be beaten, the stage stays inside, actions are checked, malformed or absurd
requests get a 4xx that says what was wrong (never a 5xx), and the work one request can cause is
bounded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import useq

from scopeflow import EdgeRejected, EventFailed, Frame
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.storage import FrameJournal

ENVELOPE = """\
x_limits_um: [{x0}, 9000.0]
y_limits_um: [1000.0, 9000.0]
z_limits_um: [-100.0, 100.0]
max_exposure_ms: 100.0
light_dose_budget_mj: {budget}
channel_power_mw: {{BF: 0.0, DAPI: 20.0, GFP: 30.0}}
"""
LIMITS = {
    "SCOPEFLOW_EDGE__LIMITS__MAX_BODY_BYTES": str(1 << 20),
    "SCOPEFLOW_EDGE__LIMITS__MAX_EVENTS_PER_REQUEST": "1000",
    "SCOPEFLOW_EDGE__LIMITS__MAX_QUEUED_EVENTS": "2000",
}


def _start(data_dir: Path, *, x0: float = 1000.0, budget: float = 50.0) -> EdgeProcess:
    envelope = data_dir.parent / f"{data_dir.name}-envelope.yaml"
    envelope.write_text(ENVELOPE.format(x0=x0, budget=budget))
    args = ["--camera-size", "32", "--envelope", str(envelope)]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LIMITS.items():
            patch.setenv(name, value)
        return EdgeProcess(data_dir, extra_args=args, startup_timeout=240).start()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    edge = _start(tmp_path_factory.mktemp("tight") / "edge")
    try:
        yield edge
    finally:
        edge.stop()


@pytest.fixture()
def tclient(tight: EdgeProcess) -> Iterator[EdgeClient]:
    with EdgeClient(tight.url, token_file=tight.token_file) as c:
        _settle(c)
        yield c


def _settle(client: EdgeClient) -> None:
    """Until an event runs again: events queued just as a stop ends its run are dropped with
    it, and a pause asked for then holds the next run."""
    for _ in range(50):
        client.resume()
        cid = _cid()
        client.submit_events([{"channel": "BF", "exposure": 1}], command_id=cid)
        client.wait_until_idle()
        done = client.command_status(cid).done
        if done is not None and done.outcome == "completed":
            return
        time.sleep(0.1)
    raise AssertionError("the edge does not run events any more")


def _headers(edge: EdgeProcess) -> dict[str, str]:
    token = edge.token_file.read_text().strip()
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _post(edge: EdgeProcess, path: str, body: bytes | str) -> httpx.Response:
    return httpx.post(f"{edge.url}{path}", content=body, headers=_headers(edge), timeout=60)


def _pause(client: EdgeClient) -> None:
    """Pause and wait until the runner is paused (a pause asked for while an event is being
    taken holds from the next event on)."""
    deadline = time.monotonic() + 60
    while client.state().run_state != "paused":
        client.pause()
        time.sleep(0.1)
        assert time.monotonic() < deadline, "the edge did not pause"


def _cid() -> str:
    return f"env-{uuid.uuid4().hex}"


def _frames(client: EdgeClient, start: int, stop: int) -> list[Frame]:
    return [f for f in client.frames(start, stop=stop) if isinstance(f, Frame)]


_INTENSITY = (
    '{"command_id": "%%s", "events": [{"properties": [["Illumination", "Intensity", %s]]}]}'
)

# the dose budget -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "limit"),
    [
        (
            "/v1/events",
            _INTENSITY % "-5",
            "max_intensity_percent",
        ),
        (
            "/v1/events",
            _INTENSITY % "NaN",
            "allowed_properties",
        ),
        (
            "/v1/events",
            '{"command_id": "%s", "events": [{"channel": "DAPI", "exposure": Infinity}]}',
            "max_exposure_ms",
        ),
        (
            "/v1/events",
            _INTENSITY % '"hi"',
            "allowed_properties",
        ),
    ],
)
def test_negative_nan_or_infinite_light_is_refused(
    tight: EdgeProcess, tclient: EdgeClient, path: str, body: str, limit: str
) -> None:
    before = tclient.state()
    response = _post(tight, path, body % _cid())
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["limit"] == limit
    assert "send" in detail["message"]  # says what to send instead
    after = tclient.state()
    assert after.frames_acquired == before.frames_acquired
    assert after.light_dose == before.light_dose


@pytest.mark.parametrize("command", ['{"type": "set_illumination", "intensity": NaN}',
                                     '{"type": "set_illumination", "intensity": -1}',
                                     '{"type": "move_stage", "x": Infinity}'])  # fmt: skip
def test_direct_commands_with_non_finite_or_negative_values_get_422(
    tight: EdgeProcess, tclient: EdgeClient, command: str
) -> None:
    before = tclient.state()
    response = _post(tight, "/v1/commands", f'{{"command_id": "{_cid()}", "command": {command}}}')
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    after = tclient.state()
    assert (after.stage, after.intensity) == (before.stage, before.intensity)


def test_the_dose_is_charged_from_the_settings_in_force_when_the_frame_is_taken(
    tight: EdgeProcess, tclient: EdgeClient
) -> None:
    tclient.move_stage(5_000.0, 5_000.0, 0.0)
    tclient.set_channel("DAPI")
    tclient.set_exposure(5.0)
    tclient.set_illumination(10.0)
    start = tclient.state()
    _pause(tclient)
    ack = tclient.submit_events([{}] * 3)  # no channel, exposure or intensity of their own
    assert ack.queued_events == 3
    estimate = 20.0 * 0.10 * 5.0 / 1000  # what the check at submission counts per event
    assert 0 < tclient.state().light_dose.reserved_mj <= 3 * estimate + 1e-9
    tclient.set_exposure(50.0)  # raised after the check, before the frames are taken
    tclient.set_illumination(80.0)
    tclient.resume()
    state = tclient.wait_until_idle()
    per_frame = 20.0 * 0.80 * 50.0 / 1000  # the settings in force: 0.8 mJ, not 0.01
    assert state.light_dose.used_mj == pytest.approx(start.light_dose.used_mj + 3 * per_frame)
    assert state.light_dose.reserved_mj == pytest.approx(0.0, abs=1e-9)
    frames = _frames(tclient, start.frames_journaled, state.frames_journaled)
    assert len(frames) == 3
    journal = FrameJournal.open(tight.journal)
    for frame in frames:
        header = frame.header
        assert (header.channel, header.exposure_ms) == ("DAPI", 50.0)
        assert (header.intensity, header.power_mw) == (80.0, 20.0)
        assert header.dose_mj == pytest.approx(per_frame)
        meta = journal.read_meta(header.index)["meta"]  # audited from the journal alone
        assert meta["dose_mj"] == pytest.approx(per_frame) and meta["intensity"] == 80.0


def test_frames_over_the_budget_are_refused_before_the_light_and_the_budget_survives_a_restart(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "edge"
    edge = _start(data_dir, budget=2.5)
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            client.set_channel("DAPI")
            client.set_exposure(5.0)
            client.set_illumination(10.0)
            _pause(client)
            cid = _cid()
            client.submit_events([{}] * 6, command_id=cid, on_error="skip")  # 0.06 mJ est.
            client.set_exposure(50.0)  # now 1 mJ a frame: two fit in 2.5 mJ
            client.set_illumination(100.0)
            client.resume()
            state = client.wait_until_idle()
            status = client.command_status(cid)
            assert status.done is not None
            assert (status.done.frames, status.done.failed) == (2, 4)
            assert all(isinstance(f, EventFailed) for f in status.failures)
            assert all("light dose" in f.error and f.step == "setup" for f in status.failures)
            assert state.frames_acquired == 2
            assert state.light_dose.used_mj == pytest.approx(2.0)
    finally:
        edge.stop()
    edge = _start(data_dir, budget=2.5)  # same data dir: the used dose is remembered
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            state = client.state()
            assert state.light_dose.used_mj == pytest.approx(2.0)
            with pytest.raises(EdgeRejected) as info:
                client.submit_events([{"channel": "DAPI", "exposure": 100.0}])
            assert info.value.detail["limit"] == "light_dose_budget_mj"
            assert client.state().frames_acquired == 0
    finally:
        edge.stop()


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scopeflow", "edge", "serve", "--port", "0",
               "--data-dir", str(tmp_path / "edge"), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_an_allowed_channel_without_a_power_stops_the_edge_at_load(tmp_path: Path) -> None:
    envelope = tmp_path / "envelope.yaml"
    envelope.write_text("allowed_channels: [BF, DAPI, GFP]\nchannel_power_mw: {DAPI: 20.0}\n")
    done = _serve(tmp_path, "--simulate", "--camera-size", "32", "--envelope", str(envelope))
    assert done.returncode != 0
    assert "['BF', 'GFP'] have no power value" in done.stderr
    assert "add each to channel_power_mw" in done.stderr  # the fix


def test_a_real_microscope_without_an_envelope_is_refused_with_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "scope.cfg"
    config.write_text("# a Micro-Manager configuration\n")
    done = _serve(tmp_path, "--mm-config", str(config))
    assert done.returncode == 2
    assert "needs its own safety envelope" in done.stderr
    assert "--envelope FILE" in done.stderr
    assert '"event": "ready"' not in done.stdout


# the stage -----------------------------------------------------------------------------------


def test_a_start_outside_refuses_acquisition_until_a_move_brings_the_stage_inside(
    tmp_path: Path,
) -> None:
    edge = _start(tmp_path / "edge", x0=6_000.0)  # the simulator starts at x = 5000
    try:
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            assert client.state().stage.x == 5_000.0
            with pytest.raises(EdgeRejected) as info:
                client.submit_events([{"channel": "BF", "exposure": 5}])
            assert info.value.detail["limit"] == "x_limits_um"
            assert "stays where it is" in info.value.detail["message"]
            with pytest.raises(EdgeRejected) as info:
                client.move_stage(y=6_000.0)  # X stays outside
            assert info.value.detail["limit"] == "x_limits_um"
            assert client.state().stage.y == 5_000.0  # nothing moved
            client.move_stage(x=7_000.0)
            client.submit_events([{"channel": "BF", "exposure": 5}] * 2)
            state = client.wait_until_idle()
            assert state.frames_acquired == 2
            frames = _frames(client, 0, 2)
            assert {f.header.stage.x for f in frames} == {7_000.0}
            # a stop must not take the stage back to where the run began (x = 5000)
            client.pause()
            client.submit_events([{"x_pos": 8_000.0, "channel": "BF", "exposure": 5}] * 3)
            client.stop()
            after = client.wait_until_idle()
            assert 6_000.0 <= after.stage.x <= 9_000.0, after.stage
    finally:
        edge.stop()


@pytest.mark.parametrize(
    ("event", "limit"),
    [
        ({"action": {"type": "hardware_autofocus", "autofocus_motor_offset": 1e9}},
         "autofocus_offset_limits"),
        ({"action": {"type": "hardware_autofocus", "max_retries": 1000}},
         "max_autofocus_retries"),
        ({"slm_image": {"data": [[1, 0], [0, 1]]}}, "allowed_actions"),
        ({"roi": [0, 0, 10**9, 10**9]}, "allowed_actions"),
        ({"keep_shutter_open": True, "channel": "BF"}, "allow_keep_shutter_open"),
        ({"z_pos": 500.0}, "z_limits_um"),
    ],
)  # fmt: skip
def test_actions_and_positions_are_checked(tclient: EdgeClient, event: dict, limit: str) -> None:
    before = tclient.state()
    with pytest.raises(EdgeRejected) as info:
        tclient.submit_events([{"channel": "BF", "exposure": 5}, event])
    assert info.value.status_code == 422
    assert info.value.detail["limit"] == limit
    after = tclient.state()
    assert after.stage == before.stage and after.queue_depth == 0


# 500 -> 422 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/sequences", {"sequence": {"time_plan": {"interval": 0, "duration": 1}}},
         "time plan"),
        ("/v1/sequences", {"sequence": {"time_plan": {"interval": 1, "loops": 1_000_000}}},
         "max_events_per_request"),
        ("/v1/sequences", {"sequence": {"time_plan": {"interval": 1, "loops": 10**400}}},
         "10^400"),
        ("/v1/sequences", {"sequence": {"grid_plan": {"rows": 100_000, "columns": 100_000}}},
         "smaller plate or grid"),
        ("/v1/sequences", {"sequence": {"grid_plan": {"top": 0, "bottom": 1e16, "left": 0,
                                                      "right": 1e16}}}, "max_events_per_request"),
        ("/v1/events", {"events": [{"x_pos": "NaN"}]}, "finite"),
        ("/v1/events", {"events": [{"properties": [["Illumination", "Intensity", [1]]]}]},
         "must be a number"),
    ],
)  # fmt: skip
def test_requests_that_crashed_the_edge_get_422_with_the_reason(
    tight: EdgeProcess, tclient: EdgeClient, path: str, body: dict, says: str
) -> None:
    response = _post(tight, path, json.dumps({"command_id": _cid(), **body}))
    assert response.status_code == 422, response.text
    assert says in response.text
    assert tclient.state().queue_depth == 0


@pytest.mark.parametrize(
    ("sequence", "says"),
    [
        ({"grid_plan": {"num_points": 900, "max_width": 1e3, "max_height": 1e3}},
         "max_layout_steps"),
        ({"stage_positions": {"plate": {"rows": 13598.0, "columns": 3355.0, "well_spacing": 1,
                                        "well_size": 0.5}, "a1_center_xy": [0, 0]}},
         "smaller plate or grid"),
        ({"stage_positions": {"plate": {"rows": 300, "columns": 300, "well_spacing": 1,
                                        "well_size": 0.5}, "a1_center_xy": [0, 0]}},
         "select fewer wells"),
    ],
)  # fmt: skip
def test_sequences_useq_would_lay_out_for_a_minute_are_refused_first(
    tight: EdgeProcess, tclient: EdgeClient, sequence: dict, says: str
) -> None:
    """What stalled fuzzed requests past 60 s: a two_opt order of random points (n² in pure
    Python), a plate counted in floats, a plate's every well laid out while validating."""
    body = json.dumps({"command_id": _cid(), "sequence": sequence})
    response = _post(tight, "/v1/sequences", body)
    assert response.status_code == 422, response.text
    assert says in response.text
    assert tclient.state().queue_depth == 0


def test_a_refusal_whose_value_is_not_finite_is_still_json(tight: EdgeProcess) -> None:
    body = '{"command_id": "' + _cid() + '", "events": [{"y_pos": -Infinity}]}'
    response = _post(tight, "/v1/events", body)
    assert response.status_code == 422
    assert response.json()["detail"]["value"] == "-inf"


# bounds on work --------------------------------------------------------------------------------


def test_an_oversized_body_gets_413_before_it_is_read_whole(tight: EdgeProcess) -> None:
    body = b'{"command_id": "big", "events": [' + b"{}," * 700_000 + b"{}]}"  # 2.1 MB
    response = _post(tight, "/v1/events", body)
    assert response.status_code == 413
    assert response.json()["detail"]["limit"] == "max_body_bytes"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"command_id": "big2", "events": ['
        for _ in range(40):
            yield b"{}," * 10_000

    chunked = httpx.post(
        f"{tight.url}/v1/events", content=chunks(), headers=_headers(tight), timeout=60
    )
    assert chunked.status_code == 413
    assert httpx.get(f"{tight.url}/healthz").json() == {"status": "ok"}


def test_the_queue_is_bounded_and_absurd_truth_times_are_refused(
    tight: EdgeProcess, tclient: EdgeClient
) -> None:
    _pause(tclient)
    try:
        many = [{"channel": "BF", "exposure": 1}] * 1000
        tclient.submit_events(many)
        tclient.submit_events(many)
        with pytest.raises(EdgeRejected) as info:
            tclient.submit_events(many[:10])
        assert info.value.detail["limit"] == "max_queued_events"
        assert "wait until the queue drains" in info.value.detail["message"]
        with pytest.raises(EdgeRejected) as info:
            tclient.submit_events(many + many[:1])
        assert info.value.detail["limit"] == "max_events_per_request"
    finally:
        tclient.stop()
    for t_s in ("1e300", "-5", "nan", "inf"):
        response = httpx.get(
            f"{tight.url}/v1/truth", params={"t_s": t_s}, headers=_headers(tight), timeout=30
        )
        assert response.status_code == 422, (t_s, response.text)
    assert httpx.get(f"{tight.url}/healthz").json() == {"status": "ok"}


def test_hundreds_of_idle_connections_and_heavy_requests_leave_health_answering(
    tight: EdgeProcess,
) -> None:
    process = psutil.Process(tight.pid)
    rss_before = process.memory_info().rss
    idle: list[socket.socket] = []
    try:
        for i in range(300):
            sock = socket.create_connection(("127.0.0.1", int(tight.url.rsplit(":", 1)[1])))
            if i % 2:
                sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n")
            idle.append(sock)
        heavy = json.dumps({"command_id": "", "events": [{"x_pos": 5000.0}] * 1000})
        bodies = [heavy.replace('""', f'"{_cid()}"') for _ in range(4)]
        results: list[int] = []
        senders = [
            threading.Thread(
                target=lambda b=b: results.append(_post(tight, "/v1/events", b).status_code)
            )
            for b in bodies
        ]
        for sender in senders:
            sender.start()
        health = httpx.get(f"{tight.url}/healthz", timeout=30)
        for sender in senders:
            sender.join(120)
        assert health.json() == {"status": "ok"}
        assert len(results) == 4 and set(results) <= {200, 422}, results  # queue bound: 422
        growth_mb = (process.memory_info().rss - rss_before) / 2**20
        assert growth_mb < 100, f"the edge grew by {growth_mb:.0f} MB"
    finally:
        for sock in idle:
            sock.close()
    with EdgeClient(tight.url, token_file=tight.token_file) as client:
        client.stop()
        _settle(client)


def test_garbage_and_half_handshakes_on_the_stream_port_are_refused_and_it_keeps_serving(
    tight: EdgeProcess, tclient: EdgeClient
) -> None:
    port = tight.stream_port
    for junk in (
        os.urandom(4096),
        b"\x00" * 100 + b"\n",
        b'{"token": "',
        b"GET / HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            try:
                while sock.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    start = tclient.state().frames_journaled
    tclient.submit_events([useq.MDAEvent(channel="BF", exposure=1)])
    assert tclient.wait_until_idle().frames_journaled == start + 1
    frames = _frames(tclient, start, start + 1)
    assert [f.index for f in frames] == [start]


# the OpenAPI document --------------------------------------------------------------------------


def test_the_openapi_documents_every_status_code_with_its_body(tight: EdgeProcess) -> None:
    spec = httpx.get(f"{tight.url}/openapi.json").json()
    expected = {
        ("post", "/v1/events"): {"200", "400", "401", "409", "413", "422", "503"},
        ("post", "/v1/sequences"): {"200", "400", "401", "409", "413", "422", "503"},
        ("post", "/v1/commands"): {"200", "400", "401", "409", "413", "422", "503"},
        ("get", "/v1/state"): {"200", "401"},
        ("get", "/v1/commands/{command_id}"): {"200", "401", "404", "422"},
        ("get", "/v1/frames/{index}"): {"200", "401", "404", "422"},
        ("get", "/v1/truth"): {"200", "401", "422", "503"},
    }
    for (method, path), codes in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert codes <= set(responses), (path, sorted(responses))
        for code in codes - {"200"}:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema, (path, code)
    refusal = spec["components"]["schemas"]["Refusal"]
    assert "too_large" in json.dumps(refusal)
