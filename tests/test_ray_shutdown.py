"""Closing a Ray backend (or Ray QC workers) while other threads still wait on its results: Ray
is shut down only once no thread is inside a Ray call, the waiters are told the owner closed,
and the process lives on. (Ray ends the whole process when a thread is inside a Ray call as
it shuts down: ray-project/ray#19115. It took a CI test worker down with it, at the end of an
autofocus run whose late focus scores were still awaited, 2026-12-05.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("owner", ["backend", "qc"])
def test_ray_shuts_down_only_after_the_threads_waiting_on_it_have_left(owner: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests._ray_shutdown_child", owner],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # the process lived through the shutdown
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["gets_running_at_shutdown"] == 0, report
    assert not report["ray_initialized"], report  # it did shut Ray down
    # each waiter heard at once that its owner closed (or, from the backend, that its actor was
    # killed with it), not after the 20 s frame or its 600 s wait
    outcomes = report["outcomes"]
    assert len(outcomes) == 3, report
    said = {
        "backend": ("InferenceError: this Ray backend is closed", "WorkerLost"),
        "qc": ("RuntimeError: these QC workers are closed",),
    }[owner]
    assert all(o.startswith(said) and "closed" in o for o in outcomes), report
    assert report["close_s"] < 15, report
