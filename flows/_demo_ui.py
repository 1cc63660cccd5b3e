"""``scopeflow demo --ui``: the demo reports to a Prefect server (API and UI) that keeps running
after it, so a user can look at the run, its tasks, logs and artifacts; Ctrl-C stops it.

The server is ``prefect server start`` as a child process on 127.0.0.1, with its own home and
SQLite database under ``<data_dir>/prefect-ui`` (so every ``demo --ui`` run stays listed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from scopeflow import Closeable, ConfigurationError, ScopeflowError

__all__ = ["DemoUI"]

_STARTUP_TIMEOUT_S = 180.0


class DemoUI(Closeable):
    """``with DemoUI(data_dir, port) as ui:`` run flows (they report to ``ui.api_url``), then
    ``ui.flow_run_url(name)`` is where the latest run of flow ``name`` is seen, and
    ``ui.serve_until_interrupted()`` keeps the server up until Ctrl-C or SIGTERM."""

    def __init__(self, data_dir: Path, port: int = 4200) -> None:
        self.home = (data_dir / "prefect-ui").resolve()
        self.port = port or _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.base_url}/api"
        self._process: subprocess.Popen[bytes] | None = None
        self._settings = contextlib.ExitStack()

    def start(self) -> DemoUI:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise ConfigurationError(
                    f"port {self.port} on 127.0.0.1 is taken (another Prefect server?): pass "
                    "--ui-port with a free port, or stop what listens there"
                )
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home}/prefect.db",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.api_url,
        }
        env.pop("PREFECT_API_URL", None)
        with (self.home / "server.log").open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(self.port), "--no-scheduler", "--no-late-runs"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._wait_healthy()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # flows run in this process report to this server
        self._settings.enter_context(temporary_settings({PREFECT_API_URL: self.api_url}))
        return self

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ScopeflowError(f"the Prefect server exited at start: {self._log_tail()}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.close()
        raise ScopeflowError(
            f"the Prefect server did not answer within {_STARTUP_TIMEOUT_S:g} s: {self._log_tail()}"
        )

    def flow_run_url(self, flow_name: str) -> str:
        """The UI page of the latest run of flow ``flow_name`` (the server's home page if none)."""
        response = httpx.post(
            f"{self.api_url}/flow_runs/filter",
            json={"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1},
            timeout=30,
        )
        response.raise_for_status()
        runs: list[dict[str, Any]] = response.json()
        return f"{self.base_url}/runs/flow-run/{runs[0]['id']}" if runs else self.base_url

    def serve_until_interrupted(self) -> None:
        """Block until Ctrl-C or SIGTERM (or the server exits)."""
        assert self._process is not None
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.is_set() and self._process.poll() is None:
                stop.wait(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    def close(self) -> None:
        self._settings.close()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # the server and its workers
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _log_tail(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")[-2000:]

    def __enter__(self) -> DemoUI:
        return self.start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
