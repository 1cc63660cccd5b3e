"""The re-queue reaction (``respond-to-anomaly``) and the microscope lease, on a real edge process
and a real Prefect server: while a flow run leases the microscope the re-queue waits (logging
who holds it), then takes the lease for itself and takes the tile once; a lease that stays
past the reaction's wait fails it with who holds the microscope and until when."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.reactions import AnomalyResponseParams, respond_to_anomaly
from scopeflow import EdgeRejected, MicroscopeLeased
from tasks.hardware import EdgeClient, EdgeProcess, UsersFile

from ._prefect_server import PrefectServer


@pytest.fixture(scope="module")
def leased_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeProcess, dict]]:
    root = tmp_path_factory.mktemp("reaction-lease")
    users = UsersFile(root / "edge" / "users.json")
    tokens = {name: users.add(name, "control") for name in ("flow-runner", "automations")}
    files = {}
    for name, token in tokens.items():
        files[name] = root / f"{name}.token"
        files[name].write_text(token)
    with EdgeProcess(root / "edge", extra_args=["--camera-size", "64"]) as edge:
        yield edge, {"tokens": tokens, "files": files}


def _anomaly(edge: EdgeProcess, token_file: Path, **extra: object) -> AnomalyResponseParams:
    with EdgeClient(edge.url, token_file=token_file) as client:
        command_id = f"tile-{uuid.uuid4().hex[:8]}"
        tile = {"x_pos": 4_800.0, "y_pos": 5_100.0, "channel": "DAPI", "exposure": 5}
        ack = client.submit_events([tile], command_id=command_id)
        client.wait_until_idle()
        frame = client.frame(ack.stream_from)
    return AnomalyResponseParams(
        edge_url=edge.url,
        edge_token_file=token_file,
        frame=frame.index,
        command_id=command_id,
        event=frame.header.event,
        metric="focus",
        value=0.1,
        **extra,  # type: ignore[arg-type]
    )


def test_a_requeue_waits_for_the_lease_of_a_running_flow_then_takes_the_tile_once(
    prefect_harness: PrefectServer, leased_edge: tuple[EdgeProcess, dict]
) -> None:
    edge, users = leased_edge
    params = _anomaly(edge, users["files"]["automations"], lease_wait_s=120)
    released = threading.Event()
    with EdgeClient(edge.url, token=users["tokens"]["flow-runner"]) as run:
        hold = run.lease(holder="flow-run-42", ttl_s=30).__enter__()
        frames_before = run.state().frames_journaled

        def release_later() -> None:  # the running flow ends after a while
            released.wait(4.0)
            hold.__exit__(None, None, None)
            released.set()

        threading.Thread(target=release_later, daemon=True).start()
        result = respond_to_anomaly(params)
        assert released.is_set()  # the re-queue could not act before the flow's lease ended
        assert result["lease_waited_for"] == ["flow-run-42 (user flow-runner)"]
        assert result["lease_waited_s"] > 0
        status = run.command_status(result["command_id"])
        assert status.done is not None and status.done.frames == 1
        again = run.frame(status.stream_from)
        assert again.header.command_id == result["command_id"]
        assert again.index >= frames_before
        assert run.lease_info() is None  # its own lease given back
        # the trigger firing again acts once
        assert respond_to_anomaly(params)["repeat"] is True


def test_a_lease_that_outlasts_the_wait_fails_the_requeue_with_who_and_until(
    prefect_harness: PrefectServer, leased_edge: tuple[EdgeProcess, dict]
) -> None:
    edge, users = leased_edge
    params = _anomaly(edge, users["files"]["automations"], lease_wait_s=2)
    with (
        EdgeClient(edge.url, token=users["tokens"]["flow-runner"]) as run,
        run.lease(holder="long-run-7", ttl_s=30),
    ):
        with pytest.raises(MicroscopeLeased, match=r"leased to long-run-7 \(user flow-runner\)"):
            respond_to_anomaly(params)
        with pytest.raises(EdgeRejected) as unknown:  # nothing was queued
            run.command_status(f"requeue-{params.command_id}-f{params.frame}")
        assert unknown.value.status_code == 404
