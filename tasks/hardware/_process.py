"""Run an edge agent as a child process on 127.0.0.1 (the demo, tests and benchmarks use it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from scopeflow import Closeable, EdgeUnavailable

__all__ = ["EdgeProcess"]


class EdgeProcess(Closeable):
    """``with EdgeProcess(data_dir) as edge: EdgeClient(edge.url, token_file=edge.token_file)``.

    Starts ``scopeflow edge serve --simulate`` on free ports and stops it on exit (also on error).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        extra_args: list[str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.data_dir = data_dir
        self._args = [
            sys.executable, "-m", "scopeflow", "edge", "serve", "--simulate",
            "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir),
            *(extra_args or []),
        ]  # fmt: skip
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stream_port = 0
        self.token_file = Path()
        self.journal = Path()
        self.stderr_lines: list[str] = []

    def start(self) -> EdgeProcess:
        """Start the edge; one already running is kept (``with`` on a started one stops it)."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        ready = self._wait_ready()
        self.url = ready["url"]
        self.stream_port = int(ready["stream_port"])
        self.token_file = Path(ready["token_file"])
        self.journal = Path(ready["journal"])
        return self

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.stderr_lines.append(line.rstrip())

    def _wait_ready(self) -> dict[str, str]:
        assert self._proc is not None and self._proc.stdout is not None
        result: dict[str, str] = {}
        reader = threading.Thread(target=self._read_ready, args=(result,), daemon=True)
        reader.start()
        reader.join(self._startup_timeout)
        if not result:
            self.stop()
            tail = "\n".join(self.stderr_lines[-20:])
            raise EdgeUnavailable(
                f"edge agent did not start within {self._startup_timeout:g} s:\n{tail}"
            )
        return result

    def _read_ready(self, result: dict[str, str]) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("event") == "ready":
                result.update(message)
                return

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGINT) -> int | None:
        """Ask the agent to stop (SIGINT or SIGTERM: it journals what it has and closes), kill
        it if it hangs."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        time.sleep(0)  # let the stderr reader finish
        return self._proc.returncode

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> EdgeProcess:
        return self.start()
