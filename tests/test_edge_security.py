"""Security and many users, against real edge processes on 127.0.0.1 with real clients: TLS on
every transport, users and roles (the matrix over every route of the edge's OpenAPI), the
audit log, token rotation without a restart, the microscope lease (expiry after its holder is
killed), microscopes by name."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect as ws_connect

from scopeflow import (
    ConfigurationError,
    EdgeCertificateError,
    EdgeForbidden,
    EdgeUnauthorized,
    LeaseInfo,
    MicroscopeLeased,
    MoveStage,
)
from tasks.hardware import (
    LEGACY_USER,
    AsyncEdgeClient,
    AuditLog,
    EdgeClient,
    EdgeProcess,
    SelfSignedPair,
    UsersFile,
    make_self_signed,
)

from .conftest import REPO

CENTRE = (5000.0, 5000.0)
ROLES = ("read", "control", "admin")


class SecureEdge:
    """A TLS edge with one user per role, the CA its clients trust, and its files."""

    def __init__(self, edge: EdgeProcess, pair: SelfSignedPair, tokens: dict[str, str]) -> None:
        self.edge, self.pair, self.tokens = edge, pair, tokens
        self.url = edge.url
        self.users_file = edge.data_dir / "users.json"
        self.audit_file = edge.data_dir / "audit.jsonl"

    def client(self, who: str = "control", **kwargs: Any) -> EdgeClient:
        return EdgeClient(self.url, token=self.tokens[who], ca_file=self.pair.ca_cert, **kwargs)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(
            cafile=str(self.pair.ca_cert)), timeout=30)  # fmt: skip


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEdge]:
    root = tmp_path_factory.mktemp("secure-edge")
    pair = make_self_signed(root / "tls")
    users = UsersFile(root / "edge" / "users.json")
    tokens = {role: users.add(f"user-{role}", role) for role in ROLES}  # type: ignore[arg-type]
    args = ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--camera-size", "256"]
    with EdgeProcess(root / "edge", extra_args=args) as edge:
        tokens["legacy"] = edge.token_file.read_text().strip()
        yield SecureEdge(edge, pair, tokens)


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


# TLS ----------------------------------------------------------------------------------------


def test_the_edge_speaks_tls_and_clients_verify_it(secure: SecureEdge) -> None:
    assert secure.url.startswith("https://127.0.0.1:")
    token = secure.tokens["control"]
    # without the CA, every client refuses the edge at once (no retries), naming the fix
    with pytest.raises(EdgeCertificateError, match="ca_file"):
        EdgeClient(secure.url, token=token).state()
    with pytest.raises(EdgeCertificateError, match="ca_file"):
        asyncio.run(_async_state(secure.url, token, None))
    raw = socket.create_connection(("127.0.0.1", secure.edge.stream_port), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    raw.close()
    # a plain-text hello on the TLS stream port gets no frames
    with socket.create_connection(("127.0.0.1", secure.edge.stream_port), timeout=10) as sock:
        sock.sendall(json.dumps({"token": token, "from": 0}).encode() + b"\n")
        sock.settimeout(10)
        assert b"SFF1" not in _read_some(sock)
    # with it, everything works
    with secure.client() as edge:
        assert edge.state().run_state in ("idle", "running")
    assert asyncio.run(_async_state(secure.url, token, secure.pair.ca_cert)) in ("idle", "running")


def _read_some(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except OSError:
        return b""


async def _async_state(url: str, token: str, ca_file: Path | None) -> str:
    async with AsyncEdgeClient(url, token=token, ca_file=ca_file) as edge:
        return (await edge.state()).run_state


def test_frames_stream_over_tls_byte_exact_on_every_transport(secure: SecureEdge) -> None:
    with secure.client() as edge:
        edge.move_stage(*CENTRE)
        ack = edge.submit_events(
            [{"channel": "DAPI", "exposure": 5, "x_pos": CENTRE[0] + 40 * i} for i in range(4)]
        )
        start, stop = ack.stream_from, ack.stream_from + 4
        over: dict[str, list[np.ndarray]] = {}
        for transport in ("tcp", "websocket", "shm"):
            frames = list(edge.frames(start, stop=stop, transport=transport, verify=True))
            assert [f.index for f in frames] == list(range(start, stop))
            over[transport] = [f.pixels for f in frames]
        over["http"] = [edge.frame(i).pixels for i in range(start, stop)]
    reference = over.pop("http")
    assert len({p.tobytes() for p in reference}) == 4  # four different frames
    for transport, pixels in over.items():
        for got, want in zip(pixels, reference, strict=True):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), transport

    async def stream() -> list[bytes]:
        async with AsyncEdgeClient(
            secure.url, token=secure.tokens["read"], ca_file=secure.pair.ca_cert
        ) as edge:
            return [f.pixels.tobytes() async for f in edge.frames(start, stop=stop)]

    assert asyncio.run(stream()) == [p.tobytes() for p in reference]


def test_plain_text_is_refused_off_loopback_unless_insecure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scopeflow", "edge", "serve", "--simulate", "--host", "0.0.0.0",
         "--port", "0", "--data-dir", str(tmp_path / "edge")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2
    assert "without TLS" in done.stderr and "--tls-cert" in done.stderr
    assert "--insecure" in done.stderr
    args = ["--host", "0.0.0.0", "--insecure", "--require-lease", "--camera-size", "64"]
    with EdgeProcess(tmp_path / "insecure", extra_args=args) as edge:
        assert edge.url.startswith("http://0.0.0.0:")
        with EdgeClient(edge.url, token_file=edge.token_file) as client:
            assert client.whoami().user == LEGACY_USER
            # --require-lease: no control without the lease
            with pytest.raises(MicroscopeLeased, match="requires a lease"):
                client.move_stage(*CENTRE)
            with client.lease(holder="me", ttl_s=10):
                assert client.move_stage(*CENTRE).detail == "stage moved"


# users and roles ----------------------------------------------------------------------------


def _operations(http: httpx.Client) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the edge's OpenAPI, as (method, path with its parameters filled,
    the operation): new routes are covered without editing this test."""
    spec = http.get("/openapi.json").json()
    operations = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            filled = path
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    filled = filled.replace("{" + parameter["name"] + "}", "0")
            operations.append((method.upper(), filled, operation))
    return operations


def _needs(method: str, path: str) -> str | None:
    """What a request should need, written out independently of the edge's rule."""
    if path in ("/healthz", "/openapi.json"):
        return None
    if path.startswith("/v1/admin/"):
        return "admin"
    return "read" if method in ("GET", "HEAD") else "control"


def _request(http: httpx.Client, method: str, path: str, token: str | None) -> httpx.Response:
    query = {"holder": "matrix"} if path == "/v1/lease" and method == "DELETE" else None
    body = None if method in ("GET", "HEAD", "DELETE") else {}
    return http.request(method, path, headers=_bearer(token), json=body, params=query)


def test_every_route_refuses_no_wrong_and_too_low_tokens(secure: SecureEdge) -> None:
    """The matrix: no token / wrong token -> 401, a role too low -> 403, a role high enough
    gets past access control (its own answer may still be 4xx for the empty body), over every
    operation of the OpenAPI, which documents those codes."""
    checked: dict[str, int] = {}
    with secure.http() as http:
        operations = _operations(http)
        assert {"/v1/commands", "/v1/events", "/v1/sequences", "/v1/sim/faults", "/v1/lease",
                "/v1/admin/users/reload"} <= {p for _, p, _ in operations}  # fmt: skip
        for method, path, operation in operations:
            needed = _needs(method, path)
            if needed is None:
                assert _request(http, method, path, None).status_code == 200
                continue
            documented = set(operation["responses"])
            assert "401" in documented, (method, path)
            if needed != "read":
                assert "403" in documented, (method, path)
            if needed == "control":
                assert "423" in documented, (method, path)
            assert _request(http, method, path, None).status_code == 401, (method, path)
            for wrong in ("nope", secure.tokens["control"] + "x", "user-admin.forged"):
                answer = _request(http, method, path, wrong)
                assert answer.status_code == 401, (method, path, wrong)
                assert answer.json()["detail"]["error"] == "unauthorized"
            for role in ROLES:
                answer = _request(http, method, path, secure.tokens[role])
                allowed = ROLES.index(role) >= ROLES.index(needed)
                if allowed:
                    assert answer.status_code not in (401, 403), (method, path, role, answer.text)
                else:
                    assert answer.status_code == 403, (method, path, role)
                    assert answer.json()["detail"]["error"] == "forbidden"
                    assert needed in answer.json()["detail"]["message"]
            checked[f"{method} {path}"] = ROLES.index(needed)
    # while another holder leases the microscope every control route answers 423, saying who;
    # observers are never refused
    with (
        secure.client("admin") as admin,
        admin.lease(holder="matrix-holder", ttl_s=120),
        secure.http() as http,
    ):
        for method, path, _ in operations:
            answer = _request(http, method, path, secure.tokens["control"])
            if path == "/v1/lease" and method == "POST":
                assert answer.status_code == 422  # no holder in the body: invalid first
            elif _needs(method, path) == "control":
                assert answer.status_code == 423, (method, path, answer.text)
                assert answer.json()["detail"]["lease"]["holder"] == "matrix-holder"
            elif _needs(method, path) == "admin":
                assert answer.status_code == 403, (method, path)
            else:
                assert answer.status_code not in (401, 403, 423), (method, path)
    control_routes = {k for k, v in checked.items() if v == 1}
    assert {"POST /v1/events", "POST /v1/sequences", "POST /v1/commands", "POST /v1/sim/faults",
            "POST /v1/lease", "DELETE /v1/lease"} <= control_routes  # fmt: skip
    with secure.client("legacy") as legacy:  # the --token-file token: one control user
        assert legacy.whoami().role == "control"


def test_streams_and_the_command_channel_check_the_role(secure: SecureEdge) -> None:
    port = secure.edge.stream_port
    with secure.client() as edge:  # a frame of this test's own to stream
        frame = edge.submit_events([{"channel": "DAPI", "exposure": 5}]).stream_from

    def hello(token: str | None, **fields: Any) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(secure.pair.ca_cert))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            body = {"from": 0, **fields} | ({"token": token} if token is not None else {})
            sock.sendall(json.dumps(body).encode() + b"\n")
            return json.loads(sock.makefile("rb").readline())

    for token in (None, "nope", secure.tokens["read"] + "x"):
        refused = hello(token)
        assert refused["ok"] is False and "token" in refused["error"]
        refused = hello(token, commands=True)
        assert refused["ok"] is False and "token" in refused["error"]
    assert hello(secure.tokens["read"])["ok"] is True  # observers stream
    forbidden = hello(secure.tokens["read"], commands=True)
    assert forbidden["ok"] is False and forbidden["error"].startswith("forbidden")
    assert hello(secure.tokens["control"], commands=True)["ok"] is True

    with secure.client("read") as observer:
        with pytest.raises(EdgeForbidden), observer.command_channel() as channel:
            channel.move_stage(*CENTRE)
        frames = list(observer.frames(frame, stop=frame + 1, transport="tcp"))
        assert frames[0].index == frame
    # the WebSocket: refused without a valid token, open to observers
    ws_url = secure.url.replace("https", "wss") + f"/v1/frames?from={frame}"
    context = ssl.create_default_context(cafile=str(secure.pair.ca_cert))
    # refused before the upgrade (HTTP 403); over TLS the client may see the connection
    # closed before it reads that answer: either way no frame comes
    refused = pytest.raises(Exception, match=r"1008|403|rejected|policy|no close frame")
    with refused, ws_connect(ws_url, ssl=context, open_timeout=30) as ws:
        ws.recv(timeout=5)
    # 30 s for the TLS and upgrade handshake, not the client's 10: under four test workers on
    # two cores one CI run timed out waiting for the answer to this upgrade
    read = _bearer(secure.tokens["read"])
    with ws_connect(ws_url, ssl=context, additional_headers=read, open_timeout=30) as ws:
        assert ws.recv(timeout=10)[:4] == b"SFF1"


def test_the_audit_log_says_who_sent_which_command(secure: SecureEdge) -> None:
    with secure.client("control") as edge:
        edge.move_stage(*CENTRE, command_id="audit-http-move")
        with edge.command_channel() as channel:
            channel.set_exposure(7.0, command_id="audit-channel-exposure")
    with secure.client("read") as observer, pytest.raises(EdgeForbidden):
        observer.stop(command_id="audit-refused-stop")
    records = AuditLog.read(secure.audit_file)
    by_id = {r.get("command_id"): r for r in records}
    http_move = by_id["audit-http-move"]
    assert (http_move["user"], http_move["role"], http_move["via"]) == (
        "user-control", "control", "http",
    )  # fmt: skip
    assert http_move["command"] == "move_stage" and http_move["status"] == 200
    channel = by_id["audit-channel-exposure"]
    assert (channel["user"], channel["via"], channel["command"]) == (
        "user-control", "channel", "set_exposure",
    )  # fmt: skip
    refused = by_id["audit-refused-stop"]
    assert (refused["user"], refused["status"], refused["command"]) == ("user-read", 403, "stop")
    assert not any(r["path"] == "/v1/state" for r in records if "path" in r)  # reads: not audited


def test_tokens_rotate_without_a_restart(secure: SecureEdge) -> None:
    cli = [sys.executable, "-m", "scopeflow", "edge", "user"]

    def scopeflow_user(*args: str) -> str:
        done = subprocess.run(
            [*cli, *args, "--users-file", str(secure.users_file)],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    pid = secure.edge.pid
    first = scopeflow_user("add", "rotating", "--role", "control")
    assert first.startswith("rotating.") and first not in secure.users_file.read_text()
    with EdgeClient(secure.url, token=first, ca_file=secure.pair.ca_cert) as edge:
        assert edge.whoami().user == "rotating"
        channel = edge.command_channel()
        channel.move_stage(*CENTRE)  # an open command channel
    second = scopeflow_user("rotate", "rotating")
    with pytest.raises(EdgeUnauthorized):
        EdgeClient(secure.url, token=first, ca_file=secure.pair.ca_cert).state()
    with pytest.raises(EdgeUnauthorized):  # the open channel's next command too
        channel.move_stage(*CENTRE)
    channel.close()
    with EdgeClient(secure.url, token=second, ca_file=secure.pair.ca_cert) as edge:
        assert edge.whoami().role == "control"
    scopeflow_user("remove", "rotating")
    with pytest.raises(EdgeUnauthorized):
        EdgeClient(secure.url, token=second, ca_file=secure.pair.ca_cert).state()
    assert secure.edge.pid == pid and secure.edge.alive()  # no restart

    # a broken users file keeps the users in force and the admin's reload says what is wrong
    good = secure.users_file.read_text()
    try:
        secure.users_file.write_text('{"version": 1, "users": {"x": {"role": "root"}}}')
        with secure.client("control") as edge:
            assert edge.whoami().user == "user-control"
        with secure.http() as http:
            answer = http.post("/v1/admin/users/reload", headers=_bearer(secure.tokens["admin"]))
        assert answer.status_code == 422 and "users file" in answer.json()["detail"]["message"]
    finally:
        secure.users_file.write_text(good)
    with secure.http() as http:
        answer = http.post("/v1/admin/users/reload", headers=_bearer(secure.tokens["admin"]))
    assert answer.status_code == 200 and answer.json()["users"] == 4  # 3 + the --token-file one


def test_the_users_file_keeps_hashes_only(tmp_path: Path) -> None:
    users = UsersFile(tmp_path / "users.json")
    token = users.add("alice", "control")
    text = users.path.read_text()
    assert token not in text and token.split(".")[1] not in text
    assert oct(users.path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigurationError, match="already exists"):
        users.add("alice", "read")
    with pytest.raises(ConfigurationError, match="unknown role"):
        users.add("bob", "root")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not allowed"):
        users.add("bad.name", "read")


# the microscope lease -----------------------------------------------------------------------

_HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tasks.hardware import EdgeClient
    url, token, ca, holder = sys.argv[1:5]
    with EdgeClient(url, token=token, ca_file=ca) as edge, edge.lease(holder=holder, ttl_s=9.0):
        edge.move_stage(5000.0, 5000.0)
        print("held", flush=True)
        time.sleep(600)
    """
)


def test_a_lease_refuses_others_and_runs_out_after_its_holder_is_killed(
    secure: SecureEdge,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_SCRIPT, secure.url, secure.tokens["control"],
         str(secure.pair.ca_cert), "flow-run-A"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with secure.client("admin") as other, secure.client("read") as observer:
            # 9 s (a renewal every 3 s; one renewal may be a few s late on a loaded machine)
            for _ in range(3):  # longer than its ttl: the heartbeat keeps it
                with pytest.raises(MicroscopeLeased) as leased:
                    other.move_stage(*CENTRE)
                assert leased.value.status_code == 423
                assert leased.value.lease["holder"] == "flow-run-A"
                assert leased.value.lease["user"] == "user-control"
                assert "until" in str(leased.value)
                assert observer.state().run_state in ("idle", "running")  # observers always
                time.sleep(3.5)
            same_user = secure.client("control")
            with pytest.raises(MicroscopeLeased):  # the same user, another holder: refused
                same_user.lease(holder="flow-run-B").__enter__()
            same_user.close()
            with pytest.raises(MicroscopeLeased), other.command_channel() as channel:
                channel.move_stage(*CENTRE)
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
            killed_at = time.monotonic()
            deadline = killed_at + 60
            while time.monotonic() < deadline:
                try:
                    other.move_stage(*CENTRE)
                    break
                except MicroscopeLeased:
                    time.sleep(0.2)
            else:
                pytest.fail("the lease of a killed holder never ran out")
            assert observer.lease_info() is None
            with other.lease(holder="flow-run-C", ttl_s=5) as lease:
                assert lease.info is not None and lease.info.user == "user-admin"
                assert other.lease_info() is not None
                other.move_stage(*CENTRE)
            assert other.lease_info() is None  # released on exit
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_lease_holders_steer_and_admins_break_leases(secure: SecureEdge) -> None:
    with (
        secure.client("control") as mine,
        secure.client("legacy") as others,
        mine.lease(holder="person-ana", ttl_s=60) as lease,
    ):
        mine.move_stage(*CENTRE)  # the holder's own requests pass
        with mine.command_channel() as channel:
            assert channel.move_stage(*CENTRE).detail == "stage moved"
        with EdgeClient(secure.url, token=secure.tokens["control"],
                        ca_file=secure.pair.ca_cert) as same_context:  # fmt: skip
            assert same_context.holder == "person-ana"  # clients made inside speak for it
            same_context.move_stage(*CENTRE)
        with pytest.raises(MicroscopeLeased):
            others.stop()
        with secure.http() as http:
            broken = http.delete("/v1/admin/lease", headers=_bearer(secure.tokens["admin"]))
        assert broken.status_code == 200 and broken.json()["holder"] == "person-ana"
        others.move_stage(*CENTRE)  # free again
        assert lease.lost is None


def test_a_rerun_takes_its_lease_back_and_no_other_user_can(secure: SecureEdge) -> None:
    with secure.http() as http:  # a run that crashed holding the lease (never released)
        taken = http.post(
            "/v1/lease",
            json={"holder": "run-resumed", "ttl_s": 120},
            headers=_bearer(secure.tokens["control"]),
        )
    assert taken.status_code == 200 and taken.json()["user"] == "user-control"
    with secure.client("legacy") as other_user, pytest.raises(MicroscopeLeased):
        other_user.lease(holder="run-resumed").__enter__()  # same holder name, other user
    with secure.client("control") as rerun, rerun.lease(holder="run-resumed", ttl_s=10) as lease:
        first = LeaseInfo.model_validate(taken.json())
        assert lease.info is not None and lease.info.acquired_at == first.acquired_at
        rerun.move_stage(*CENTRE)
    with secure.client("read") as observer:
        assert observer.lease_info() is None


def test_a_lease_from_the_async_client(secure: SecureEdge) -> None:
    async def run() -> tuple[str, str | None]:
        async with AsyncEdgeClient(
            secure.url, token=secure.tokens["control"], ca_file=secure.pair.ca_cert
        ) as edge:
            async with edge.lease(holder="async-run", ttl_s=9) as lease:
                for _ in range(300):  # past a heartbeat (every 3 s)
                    if lease.renewals >= 1:
                        break
                    await asyncio.sleep(0.1)
                await edge.command(MoveStage(x=CENTRE[0], y=CENTRE[1]))
                with secure.client("legacy") as other, pytest.raises(MicroscopeLeased):
                    other.move_stage(*CENTRE)
                assert lease.renewals >= 1
                holder = lease.holder
            return holder, (await edge.whoami()).lease

    holder, after = asyncio.run(run())
    assert holder == "async-run" and after is None


# several microscopes by name ----------------------------------------------------------------


def test_clients_find_microscopes_by_name(
    secure: SecureEdge, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "scope-1.token"
    token_file.write_text(secure.tokens["read"] + "\n")
    registry = {
        "scope-1": {"url": secure.url, "token_file": str(token_file),
                    "ca_file": str(secure.pair.ca_cert)},
        "scope-2": {"url": "https://127.0.0.1:9", "token_file": str(token_file)},
    }  # fmt: skip
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("SCOPEFLOW_MICROSCOPES", json.dumps(registry))
    with EdgeClient.for_microscope("scope-1") as edge:
        assert edge.whoami().user == "user-read"
    with pytest.raises(ConfigurationError, match=r"scope-1, scope-2.*\[microscopes\.nope\]"):
        EdgeClient.for_microscope("nope")
    toml = tmp_path / "scopeflow.toml"
    toml.write_text(
        f'[microscopes.scope-3]\nurl = "{secure.url}"\ntoken_file = "{token_file}"\n'
        f'ca_file = "{secure.pair.ca_cert}"\n'
    )
    monkeypatch.delenv("SCOPEFLOW_MICROSCOPES")
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(toml))
    with EdgeClient.connect(microscope="scope-3", url="http://ignored:1") as edge:
        assert edge.whoami().role == "read"


# flows lease the microscope for their run ---------------------------------------------------


def test_a_flow_run_leases_the_microscope_and_waits_for_no_one(
    prefect_harness: object, tmp_path: Path
) -> None:
    from flows import TrackedPosition, TrackingParams
    from flows.tracking import tracking

    with EdgeProcess(tmp_path / "edge", extra_args=["--camera-size", "256"]) as edge:
        params = TrackingParams(
            positions=[TrackedPosition(name="a", x_um=5_000.0, y_um=5_000.0)],
            time_points=2,
            interval_s=0.5,
            backend=None,
            run_id="leased-run-1",
            edge_url=edge.url,
            edge_token_file=edge.token_file,
            output_dir=tmp_path / "out",
        )
        with EdgeClient(edge.url, token_file=edge.token_file) as person:
            # while a person holds the microscope the run is refused before anything moves
            before = person.state()
            refused = pytest.raises(MicroscopeLeased, match="person-at-the-scope")
            with person.lease(holder="person-at-the-scope", ttl_s=60), refused:
                tracking(params)
            after = person.state()
            assert after.stage == before.stage and after.frames_acquired == 0
            summary = tracking(params)
            assert person.lease_info() is None  # released at the end of the run
        assert summary["time_points"] == 2
        control = [r for r in AuditLog.read(edge.data_dir / "audit.jsonl") if r["status"] == 200]
        by_run = [r for r in control if r["holder"] == "leased-run-1"]
        # the objective switch and every time point's acquisition came under the run's lease
        assert [r.get("command") for r in by_run if r["path"] == "/v1/commands"] == [
            "set_objective"
        ]
        assert [r["command_id"] for r in by_run if r["path"] == "/v1/events"] == [
            f"leased-run-1.track.t{t:05d}-p000" for t in range(2)
        ]
        assert {r["holder"] for r in control} == {"person-at-the-scope", "leased-run-1"}
