"""Events -> automations -> runs that execute: deployments/prefect.yaml and automations.yaml
applied to a real Prefect server, real process workers picking up the triggered runs, a real
edge taking an anomalous tile again, and a local HTTP receiver getting the notification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import zarr

from tasks.events import emit_acquisition_finished, emit_qc_anomaly
from tasks.hardware import EdgeClient, EdgeProcess
from tasks.storage import write_zstack

from ._prefect_server import PrefectServer
from .conftest import REPO
from .test_deployments import deploy_all

pytestmark = pytest.mark.heavy


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def reacting(
    prefect_harness: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Receiver]:
    """Deployments and automations applied; one worker per pool on the ``reactions`` queue."""
    deploy_all(prefect_harness)
    receiver = Receiver()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_harness.url,
        "SCOPEFLOW_REPO": str(REPO),
        "PYTHONPATH": str(REPO),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    applied = subprocess.run(
        [sys.executable, "-m", "scopeflow", "automations", "apply", "--webhook-url", receiver.url],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert set(json.loads(applied.stdout)["automations"]) == {
        "scopeflow-qc-anomaly-notify",
        "scopeflow-acquisition-failed-notify",
    }
    logs = tmp_path_factory.mktemp("workers")
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                pool,
                "--work-queue",
                "reactions",
                "--type",
                "process",
            ],
            cwd=REPO,
            env=env,
            stdout=(logs / f"{pool}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for pool in ("batch-process", "microscope-reactions")
    ]
    try:
        yield receiver
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        receiver.close()


def _runs_of(deployment: str, key: str, value: object) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        (found,) = [d for d in client.read_deployments() if d.name == deployment]
        return [
            r for r in client.read_flow_runs()
            if r.deployment_id == found.id and r.parameters["params"].get(key) == value
        ]  # fmt: skip


def _completed(deployment: str, key: str, value: object, timeout: float = 300) -> object:
    """The one run of ``deployment`` whose params[key] == value, once it is final."""
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        runs = _runs_of(deployment, key, value)
        if runs and runs[0].state is not None and runs[0].state.is_final():
            break
        time.sleep(1)
    assert len(runs) == 1, f"{len(runs)} run(s) of {deployment} for {key}={value}"
    assert runs[0].state is not None and runs[0].state.is_completed(), _logs(runs[0])
    return runs[0]


def _logs(run: object) -> str:
    """The run's state and its error logs: what a failed assertion should show."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]), level=LogFilterLevel(ge_=30))
        )
    return f"{run.state}\n" + "\n".join(log.message[-2000:] for log in logs[-5:])


def test_a_finished_acquisition_gets_its_stores_segmented(
    reacting: Receiver, tmp_path: Path
) -> None:
    rng = np.random.default_rng(4)
    stack = rng.poisson(100, (2, 128, 128)).astype(np.uint16)
    stack[:, 40:60, 40:60] += 3000  # one bright nucleus per plane
    store = write_zstack(tmp_path / "target-0.ome.zarr", stack, pixel_size_um=0.5, z_step_um=2)
    run_id = f"acq-{uuid.uuid4().hex[:8]}"
    assert emit_acquisition_finished(run_id, "targeted-imaging", stores=[store], frames=2)

    _completed("process-acquisition-on-finish", "run_id", run_id)
    labels = zarr.open_array(store / "labels" / "nuclei" / "0", mode="r")[:]
    assert labels.shape[-2:] == (128, 128)
    assert labels[..., 50, 50].all() and not labels[..., 5, 5].any()


def test_an_edge_anomaly_notifies_and_the_tile_is_taken_again_once(
    reacting: Receiver, edge: EdgeProcess
) -> None:
    with EdgeClient(edge.url, token_file=edge.token_file) as client:
        client.wait_until_idle()
        command_id = f"tile-{uuid.uuid4().hex[:8]}"
        tile = {"x_pos": 4_800.0, "y_pos": 5_100.0, "channel": "DAPI", "exposure": 10}
        ack = client.submit_events([tile], command_id=command_id)
        client.wait_until_idle()
        frame = client.frame(ack.stream_from)
        assert frame.header.command_id == command_id
        # a folder image's anomaly only notifies; the edge's is also taken again
        assert emit_qc_anomaly("sem/tile_0007.tif", "focus", 0.1, threshold=0.4)
        for _ in range(2):  # a trigger firing twice must act once
            assert emit_qc_anomaly(
                f"edge-frame-{frame.index}",
                "focus",
                0.12,
                threshold=0.4,
                source="edge",
                run_id=command_id,
                edge_url=edge.url,
                edge_token_file=edge.token_file,
                frame=frame.index,
                command_id=command_id,
                event=frame.header.event,
            )
        completed = _wait_runs("requeue-tile-on-anomaly", "frame", frame.index, 2)
        requeue_id = f"requeue-{command_id}-f{frame.index}"
        status = client.command_status(requeue_id)
        assert status.done is not None and status.done.frames == 1
        again = client.frame(status.stream_from)
        assert again.header.command_id == requeue_id and again.header.tag == "requeue"
        assert (again.header.stage.x, again.header.stage.y) == (4_800.0, 5_100.0)
        later = client.wait_until_idle()
        assert later.frames_journaled == status.stream_from + 1  # taken once, not twice
        assert len(completed) == 2
    assert _runs_of("requeue-tile-on-anomaly", "frame", None) == []  # the folder image's
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(reacting.bodies) < 3:
        time.sleep(0.5)
    texts = [b.get("body", "") + b.get("subject", "") for b in reacting.bodies]
    assert any("sem/tile_0007.tif" in t and "focus" in t for t in texts), reacting.bodies
    assert any(f"edge-frame-{frame.index}" in t and "0.12" in t for t in texts), reacting.bodies


def _wait_runs(deployment: str, key: str, value: object, count: int, timeout: float = 300) -> list:
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        runs = _runs_of(deployment, key, value)
        if len(runs) >= count and all(r.state is not None and r.state.is_final() for r in runs):
            break
        time.sleep(1)
    assert len(runs) == count, f"{len(runs)} run(s) of {deployment}"
    assert all(r.state.is_completed() for r in runs), [_logs(r) for r in runs]
    return runs
