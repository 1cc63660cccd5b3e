"""A real Prefect server (API and UI) on 127.0.0.1 for the test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["PrefectServer"]


class PrefectServer:
    """``prefect server start`` in a child process, with its own home and SQLite database.

    Unlike ``prefect_test_harness`` (API only) it serves the UI, so headless Chromium can
    check what a user sees. ``url`` is the API URL (``http://127.0.0.1:PORT/api``).
    """

    def __init__(self, home: Path, startup_timeout_s: float = 180.0) -> None:
        self.home = home
        self.startup_timeout_s = startup_timeout_s
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/api"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home}/prefect.db",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.url,
        }
        env.pop("PREFECT_API_URL", None)
        log = (self.home / "server.log").open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-scheduler", "--no-late-runs"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prefect server exited: {self._log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(
            f"prefect server not up in {self.startup_timeout_s} s: {self._log_tail()}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _log_tail(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
