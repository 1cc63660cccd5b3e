"""The ``ray`` compute profile against a real, separate Ray cluster.

The cluster is started with the ``ray`` CLI as processes of its own, like a KubeRay cluster:
a head node that runs no work (``--num-cpus=0``) and one worker node with 2 CPUs. It is reached
by its GCS address and through the Ray client (``ray://``, how KubeRay is reached from outside
Kubernetes).

Ray's CLI swaps 127.0.0.1 for the machine's address when it starts a node of a multi-node
cluster, so the nodes get other loopback addresses, which Ray keeps as given: the head
127.0.0.2, the worker 127.0.0.3 (where a piece of work ran is then visible by address). The
GCS and the raylets still listen on every interface, as in any multi-node Ray cluster, so the
cluster asks for a token of its own (``RAY_AUTH_MODE=token``).

The tests drive the cluster from fresh Python processes (``_child_main``) with that token in
their environment, as a Prefect worker pod would be configured: a Ray connection is
process-global, and this test process may hold (or later start) a local Ray of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import zarr

from tasks.compute.synthetic_workload import blob_image
from tasks.storage import write_zstack

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
MARKER = "SCOPEFLOW_TEST_RAY_CLUSTER"  # in the environment of every process of the cluster


@dataclass(frozen=True)
class ExternalRay:
    gcs: str  # "127.0.0.2:<port>"
    client: str  # "ray://127.0.0.1:<port>"
    env: dict[str, str]  # for a process that connects: the cluster's token


@pytest.fixture(scope="module")
def cluster() -> Iterator[ExternalRay]:
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the `ray` CLI is not installed: pip install -e '.[dev]'")
    # short: Ray's unix socket paths (<temp>/session_<date>_<pid>/sockets/...) must fit 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="sfray-", dir="/tmp" if Path("/tmp").is_dir() else None))
    token = temp / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), **{MARKER: str(temp)})
    # the client proxier forks a server per client while gRPC threads run; with gRPC's fork
    # handlers on, that child now and then dies at once (SIGSEGV); off, it has not here
    node_env = dict(env, GRPC_ENABLE_FORK_SUPPORT="0")
    gcs_port, client_port, head_agent, worker_agent = _free_ports(4)
    common = ["--temp-dir", str(temp), "--disable-usage-stats", "--object-store-memory=100000000"]
    groups: list[int] = []
    try:
        _ray_start(
            [ray_cli, "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs_port}",
             f"--ray-client-server-port={client_port}", "--num-cpus=0",
             "--dashboard-host=127.0.0.1", "--include-dashboard=false",
             f"--dashboard-agent-listen-port={head_agent}", *common],
            node_env, temp / "head.log", groups,
        )  # fmt: skip
        _ray_start(
            [ray_cli, "start", f"--address={HEAD_IP}:{gcs_port}", f"--node-ip-address={WORKER_IP}",
             "--num-cpus=2", f"--dashboard-agent-listen-port={worker_agent}", *common],
            node_env, temp / "worker.log", groups,
        )  # fmt: skip
        yield ExternalRay(f"{HEAD_IP}:{gcs_port}", f"ray://127.0.0.1:{client_port}", env)
    finally:
        _stop_cluster(groups, str(temp))
        shutil.rmtree(temp, ignore_errors=True)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _ray_start(command: list[str], env: dict[str, str], log: Path, groups: list[int]) -> None:
    """``ray start`` in a session of its own: the node's daemons stay in its process group."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    groups.append(process.pid)
    rc = process.wait(timeout=120)
    assert rc == 0, f"{' '.join(command[:3])} failed:\n{log.read_text()[-3000:]}"


def _stop_cluster(groups: list[int], temp: str) -> None:
    """Stop this cluster only (``ray stop`` would stop every Ray on the machine, the local one
    this test process may run included): its process groups and anything else carrying its
    marker; SIGTERM, then SIGKILL after 2 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = _cluster_processes(groups, temp)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        deadline = time.monotonic() + 2
        while procs and time.monotonic() < deadline:
            time.sleep(0.2)
            procs = [p for p in procs if _running(p)]
        if not procs:
            return


def _cluster_processes(groups: list[int], temp: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if os.getpgid(proc.pid) in groups or proc.environ().get(MARKER) == temp:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return [p for p in found if _running(p)]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass(frozen=True)
class Runs:
    """restore-dataset from a fresh process by each way in (``_restore``), and the reference."""

    got: dict[str, dict[str, Any]]  # "gcs" / "client" -> what the process saw
    outputs: dict[str, Path]
    want: np.ndarray  # the whole image restored at once


# what a client sees when the proxier's child died (see GRPC_ENABLE_FORK_SUPPORT above), after
# ~40 s; another connection gets another child
CLIENT_SERVER_FLAKE = "Starting Ray client server failed"


@pytest.fixture(scope="module")
def runs(cluster: ExternalRay, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """By GCS address, then through the Ray client: a fresh connection once the first runner
    has closed."""
    from tasks.inference import load_restoration_model

    tmp = tmp_path_factory.mktemp("ray-cluster")
    image = blob_image((2, 192, 192), [(96, 96), (30, 30), (150, 40), (40, 160)], radius=14)
    store = write_zstack(tmp / "img.ome.zarr", image, pixel_size_um=0.5, z_step_um=2.0)
    addresses = {"gcs": cluster.gcs, "client": cluster.client}
    outputs = {way: tmp / f"by-{way}.ome.zarr" for way in addresses}
    got = {
        way: drive(
            cluster.env,
            "restore",
            tmp,
            retry_if=CLIENT_SERVER_FLAKE if way == "client" else None,
            address=address,
            image=str(store),
            output=str(outputs[way]),
        )
        for way, address in addresses.items()
    }
    blur = load_restoration_model("gaussian")
    return Runs(got, outputs, np.stack([blur.restore(plane) for plane in image]))


def drive(
    env: dict[str, str], task: str, tmp: Path, *, retry_if: str | None = None, **args: Any
) -> dict[str, Any]:
    """``task(**args)`` (a function below) in a fresh Python process with ``env``; once more
    when it failed with ``retry_if`` in its errors."""
    result = tmp / f"{task}-{time.monotonic_ns()}.json"
    command = [
        sys.executable,
        "-c",
        "from tests.test_ray_cluster import _child_main; _child_main()",
        task,
        json.dumps(args),
        str(result),
    ]
    for attempt in (1, 2):
        done = subprocess.run(
            command, env=env, cwd=REPO, capture_output=True, text=True, timeout=240
        )
        if done.returncode == 0 or attempt == 2 or not retry_if or retry_if not in done.stderr:
            break
    assert done.returncode == 0 and result.exists(), f"{task}:\n{done.stderr[-4000:]}"
    return json.loads(result.read_text())


@pytest.mark.parametrize("way", ["gcs", "client"])
def test_restore_dataset_runs_on_the_worker_node(
    cluster: ExternalRay, runs: Runs, way: str
) -> None:
    got = runs.got[way]
    assert got["summary"]["restored"] == 8 and got["summary"]["model"]["name"] == "gaussian"
    output = runs.outputs[way]
    np.testing.assert_allclose(zarr.open_array(output / "0")[...], runs.want, atol=1e-3)
    provenance = zarr.open_group(output).attrs["scopeflow"]
    assert provenance["status"] == "complete"
    compute = provenance["run"]["compute"]  # the runner's describe()
    assert compute["profile_kind"] == "ray" and compute["workers"] == 2
    assert compute["address"] == cluster.gcs
    # both actors on the worker node: the head has no CPUs, so nothing ran there
    assert got["actor_nodes"] == [WORKER_IP, WORKER_IP]
    assert got["nodes"] == {HEAD_IP: 0.0, WORKER_IP: 2.0}


def test_close_leaves_the_cluster_running(runs: Runs) -> None:
    for way in ("gcs", "client"):
        after = runs.got[way]["after_close"]
        assert after["connected"]  # the runner did not end a session it did not start
        assert after["nodes"] == {HEAD_IP: 0.0, WORKER_IP: 2.0}
    # and the second process, connecting afresh once the first runner had closed, ran the flow
    assert runs.got["client"]["summary"]["restored"] == 8


@pytest.mark.parametrize("way", ["gcs", "client"])
def test_more_than_the_cluster_has_names_the_fix(runs: Runs, way: str) -> None:
    assert runs.got[way]["too_big"] == {
        "cpus_per_worker=8": "ConfigurationError: each Ray worker needs CPU=8 but the cluster "
        "has 2; lower it in the compute profile or add nodes",
        "gpus_per_worker=1": "ConfigurationError: each Ray worker needs GPU=1 but the cluster "
        "has 0; lower it in the compute profile or add nodes",
    }


def test_a_missing_token_names_the_fix(cluster: ExternalRay, tmp_path: Path) -> None:
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH_")}
    env["RAY_NUM_REDIS_GET_RETRIES"] = "2"  # Ray's own retries: 20 x 1 s by default
    got = drive(env, "connect", tmp_path, address=cluster.gcs)
    assert got["error"].startswith("ComputeUnavailable: cannot connect to the Ray cluster at")
    assert "RAY_AUTH_MODE=token" in got["error"] and "RAY_AUTH_TOKEN_PATH" in got["error"]


# ---- what runs in the fresh process ------------------------------------------------------------


def _child_main() -> None:
    task, args, result = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    out = {"restore": _restore, "connect": _connect}[task](**args)
    result.write_text(json.dumps(out, default=str))


def _restore(address: str, image: str, output: str) -> dict[str, Any]:
    """restore-dataset on a runner for ``address``; then, on the connection the closed runner
    left, the cluster's nodes and runners asking for too much."""
    import ray

    from flows.restore_dataset import RestoreDatasetParams, restore_dataset_on
    from scopeflow import RayComputeProfile
    from tasks.compute import open_runner

    params = RestoreDatasetParams(
        image=Path(image), output=Path(output), model="gaussian", tile=96, halo=24
    )
    with open_runner(RayComputeProfile(address=address, workers=2)) as runner:
        out: dict[str, Any] = {
            "actor_nodes": runner.run_on_workers(ray.util.get_node_ip_address),
            "summary": restore_dataset_on(runner, params),
            "nodes": _nodes(),
        }
    out["after_close"] = {"connected": ray.is_initialized(), "nodes": _nodes()}
    out["too_big"] = {
        f"{name}={value}": _connect(address, **{name: value})["error"]
        for name, value in (("cpus_per_worker", 8), ("gpus_per_worker", 1))
    }
    ray.shutdown()
    return out


def _connect(address: str, **profile: Any) -> dict[str, str]:
    """Open and close a runner; the error it raised, if any."""
    from scopeflow import RayComputeProfile, ScopeflowError
    from tasks.compute import open_runner

    try:
        open_runner(RayComputeProfile(address=address, connect_timeout_s=5, **profile)).close()
    except ScopeflowError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": ""}


def _nodes() -> dict[str, float]:
    """Alive nodes of the connected cluster: address -> CPUs."""
    import ray

    return {
        n["NodeManagerAddress"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]
    }
