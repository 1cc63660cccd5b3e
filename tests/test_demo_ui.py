"""``scopeflow demo --ui`` as a user runs it: the demo reports to a Prefect server that stays up
afterwards with the run visible (API and UI page), and Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from .conftest import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_ui_keeps_the_run_visible_until_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PREFECT_API_URL", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "scopeflow", "demo", "tracking", "--ui", "--ui-port", str(port),
         "--json", "--time-points", "3", "--positions", "1", "--model", "classical",
         "--backend", "dask", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(demo.stderr), daemon=True).start()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(demo.stdout.readline()), daemon=True)
    reader.start()
    try:
        reader.join(400)
        assert lines and lines[0].strip(), "".join(stderr[-30:])
        summary = json.loads(lines[0])
        url = summary["ui_url"]
        base = f"http://127.0.0.1:{port}"
        assert url.startswith(f"{base}/runs/flow-run/")
        run_id = url.rsplit("/", 1)[1]
        time.sleep(2.0)  # the demo is over: the server is still there
        assert demo.poll() is None, "".join(stderr[-30:])
        run = httpx.get(f"{base}/api/flow_runs/{run_id}", timeout=30).json()
        assert run["state_type"] == "COMPLETED"
        flow = httpx.get(f"{base}/api/flows/{run['flow_id']}", timeout=30).json()
        assert flow["name"] == "tracking"
        tasks = httpx.post(
            f"{base}/api/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [run_id]}}},
            timeout=30,
        ).json()
        names = {t["name"].rsplit("-", 1)[0] for t in tasks}
        assert {"prepare-tracking", "track", "store-tracks", "summarise-tracking"} <= names
        page = httpx.get(base, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()  # the UI itself
        assert any(f"Prefect UI: {url}" in line for line in stderr)  # what the user reads

        demo.send_signal(signal.SIGINT)  # Ctrl-C
        assert demo.wait(timeout=60) == 0, "".join(stderr[-30:])
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the Prefect server is still up"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    # the run stays in the demo's own database for the next `demo --ui`
    assert (tmp_path / "prefect-ui" / "prefect.db").is_file()


def test_demo_ui_refuses_a_taken_port_with_the_fix(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scopeflow", "demo", "--ui", "--ui-port", str(port),
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "--ui-port" in result.stderr
