"""The microscope lease survives an edge restart: a real edge process on 127.0.0.1 killed with
SIGKILL and started again on the same data dir. The holder still holds the microscope, anyone
else is refused (423) with who holds it and until when, and the lease runs out by its ttl in
wall-clock time, also while the edge was down."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from scopeflow import LEASE_HEADER, EdgeUnavailable
from tasks.hardware import EdgeProcess, UsersFile

ARGS = ["--camera-size", "32"]


def _users(data_dir: Path) -> dict[str, str]:
    users = UsersFile(data_dir / "users.json")
    return {name: users.add(name, "control") for name in ("ana", "bob")}


def _http(edge: EdgeProcess, token: str, holder: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    if holder is not None:
        headers[LEASE_HEADER] = holder
    return httpx.Client(base_url=edge.url, headers=headers, timeout=60)


def _take(client: httpx.Client, holder: str, ttl_s: float) -> dict[str, Any]:
    answer = client.post("/v1/lease", json={"holder": holder, "ttl_s": ttl_s})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _move(client: httpx.Client, command_id: str) -> httpx.Response:
    body = {"command_id": command_id, "command": {"type": "move_stage", "x": 5000, "y": 5000}}
    return client.post("/v1/commands", json=body)


def _kill(edge: EdgeProcess) -> None:
    assert edge.pid is not None
    os.kill(edge.pid, signal.SIGKILL)
    edge.stop()  # reaps it


def _until(expires_at: str) -> float:
    return datetime.fromisoformat(expires_at).timestamp()


def test_a_lease_survives_a_killed_edge_and_refuses_others_until_it_runs_out(
    tmp_path: Path,
) -> None:
    data = tmp_path / "edge"
    tokens = _users(data)
    first = EdgeProcess(data, extra_args=ARGS).start()
    try:
        with _http(first, tokens["ana"], "run-7") as ana:
            granted = _take(ana, "run-7", ttl_s=600)
            assert _move(ana, "before-kill").status_code == 200
    finally:
        _kill(first)
    with (
        EdgeProcess(data, extra_args=ARGS) as second,
        _http(second, tokens["ana"], "run-7") as ana,
        _http(second, tokens["bob"], "bob-run") as bob,
    ):
        # the lease came back as it was: the same holder, user, start and end
        assert bob.get("/v1/lease").json() == granted
        refused = _move(bob, "bob-move")
        assert refused.status_code == 423
        lease = refused.json()["detail"]["lease"]
        assert (lease["holder"], lease["user"]) == ("run-7", "ana")
        assert lease["expires_at"] == granted["expires_at"]
        assert "run-7" in refused.json()["detail"]["message"]
        assert "until" in refused.json()["detail"]["message"]
        taken = bob.post("/v1/lease", json={"holder": "bob-run", "ttl_s": 30})
        assert taken.status_code == 423 and taken.json()["detail"]["lease"]["user"] == "ana"
        # its holder still holds it: it steers and renews (the start is kept)
        assert _move(ana, "after-restart").status_code == 200
        renewed = _take(ana, "run-7", ttl_s=3)
        assert renewed["acquired_at"] == granted["acquired_at"]
        # runs out by its ttl while the edge is up: not before, and then others may steer
        deadline = time.time() + 60
        while _move(bob, f"bob-poll-{time.time_ns()}").status_code == 423:
            assert time.time() < deadline, "the lease never ran out"
            time.sleep(0.2)
        assert time.time() >= _until(renewed["expires_at"])
        assert bob.get("/v1/lease").json() is None
        assert not (data / "lease.json").exists()


def test_a_lease_runs_out_while_the_edge_is_down(tmp_path: Path) -> None:
    data = tmp_path / "edge"
    tokens = _users(data)
    first = EdgeProcess(data, extra_args=ARGS).start()
    try:
        with _http(first, tokens["ana"], "run-8") as ana:
            granted = _take(ana, "run-8", ttl_s=2)
    finally:
        _kill(first)
    time.sleep(max(0.0, _until(granted["expires_at"]) - time.time()) + 0.5)
    with (
        EdgeProcess(data, extra_args=ARGS) as second,
        _http(second, tokens["bob"], "bob-run") as bob,
    ):
        assert bob.get("/v1/lease").json() is None
        assert _move(bob, "bob-after").status_code == 200
        assert _take(bob, "bob-run", ttl_s=30)["user"] == "bob"


def test_a_clean_restart_keeps_the_lease_too(tmp_path: Path) -> None:
    data = tmp_path / "edge"
    tokens = _users(data)
    with EdgeProcess(data, extra_args=ARGS) as first, _http(first, tokens["ana"]) as ana:
        granted = _take(ana, "person-ana", ttl_s=600)
    with EdgeProcess(data, extra_args=ARGS) as second, _http(second, tokens["bob"]) as bob:
        assert bob.get("/v1/lease").json() == granted
        assert _move(bob, "bob-move").status_code == 423


def test_an_unreadable_lease_file_stops_the_edge_with_the_fix(tmp_path: Path) -> None:
    data = tmp_path / "edge"
    data.mkdir()
    (data / "lease.json").write_text("{not json")
    with pytest.raises(EdgeUnavailable, match=r"(?s)lease\.json cannot be read.*delete it"):
        EdgeProcess(data, extra_args=ARGS, startup_timeout=120).start()
