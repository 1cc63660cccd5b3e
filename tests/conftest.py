from __future__ import annotations

import faulthandler
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.hardware import EdgeClient, EdgeProcess

from ._prefect_server import PrefectServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path in ../shared/data; skips the test with a reason when it is not there (fails
    instead with ``SCOPEFLOW_REQUIRE_SHARED_DATA=1``, as in CI)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        missing_real_data(f"{path} is absent (the real test data lives in ../shared/data)")
    return path


def missing_real_data(reason: str) -> None:
    """Skip with ``reason``; with ``SCOPEFLOW_REQUIRE_SHARED_DATA=1`` (CI) fail: real data that
    CI fetches or ships must not silently go untested."""
    if os.environ.get("SCOPEFLOW_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(f"SCOPEFLOW_REQUIRE_SHARED_DATA=1 but {reason}")
    pytest.skip(reason)


# the suite takes under 20 minutes on four workers; a slower machine can set more
SUITE_LIMIT_S = float(os.environ.get("SCOPEFLOW_SUITE_LIMIT_S", 45 * 60))
_SUITE_STARTED_AT = "SCOPEFLOW_SUITE_STARTED_AT"
_PROGRESS_DIR = "SCOPEFLOW_TEST_PROGRESS_DIR"


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        os.environ[_SUITE_STARTED_AT] = str(time.time())  # the workers inherit it
        if getattr(config.option, "numprocesses", None):  # the controller of parallel workers
            _end_process_at(time.time() + SUITE_LIMIT_S + 300, "the test controller")
        return
    started_at = float(os.environ.get(_SUITE_STARTED_AT, time.time()))
    _end_process_at(started_at + SUITE_LIMIT_S, f"test worker {worker}")


def _end_process_at(deadline: float, who: str) -> None:
    """A test worker still alive at ``deadline`` is stuck where pytest-timeout cannot reach (in
    C code, or at interpreter exit joining a thread that never ends): print every thread's
    stack and end the process, so that pytest-xdist reports its test as failed and the run
    ends with a summary instead of running into CI's time limit with nothing said. One deadline
    for the suite, so a worker that replaced a crashed one does not start a new clock; the
    controller's comes 5 minutes later, should it wait on something else."""

    def watch() -> None:
        time.sleep(max(0.0, deadline - time.time()))
        sys.stderr.write(f"\n{who} (pid {os.getpid()}) still running at the suite's limit:\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(70)

    threading.Thread(target=watch, name="suite-time-limit", daemon=True).start()


def pytest_runtest_logstart(nodeid: str) -> None:
    """With ``SCOPEFLOW_TEST_PROGRESS_DIR`` set (CI), each worker writes the test it is on to
    a file of its own: when a worker crashes or hangs, CI prints what each was doing."""
    folder = os.environ.get(_PROGRESS_DIR)
    if folder:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
        stamp = time.strftime("%H:%M:%S")
        Path(folder, f"{worker}-{os.getpid()}").write_text(f"{stamp} {worker} {nodeid}\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked ``heavy`` first, the one with the longest timeout first: pytest-xdist
    hands whole modules to its workers in this order, so none is left running a heavy module
    alone at the end while the others are idle. Each module's own order is kept."""

    def timeout_s(item: pytest.Item) -> float:
        marker = item.get_closest_marker("timeout")
        return float(marker.args[0]) if marker else 0.0

    heavy: dict[Path, float] = {}
    for item in items:
        if item.get_closest_marker("heavy") is not None:
            heavy[item.path] = max(heavy.get(item.path, 0.0), timeout_s(item))
    items.sort(key=lambda item: (item.path not in heavy, -heavy.get(item.path, 0.0)))


@pytest.fixture(scope="session")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """One real simulated edge agent (512x512 camera) for the session."""
    data_dir = tmp_path_factory.mktemp("edge")
    with EdgeProcess(data_dir, extra_args=["--camera-size", "512"]) as process:
        yield process


@pytest.fixture()
def client(edge: EdgeProcess) -> Iterator[EdgeClient]:
    with EdgeClient(edge.url, token_file=edge.token_file) as c:
        c.wait_until_idle()
        yield c


def validate_store(store: Path) -> None:
    """Both official validators; raise AssertionError with their output when one fails."""
    bindir = Path(sys.executable).parent
    for tool in ("ome-zarr-models", "yaozarrs"):
        exe = shutil.which(tool, path=str(bindir)) or shutil.which(tool)
        assert exe, f"{tool} is not installed: pip install -e '.[dev]'"
        result = subprocess.run(
            [exe, "validate", str(store)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{tool} validate {store}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real Prefect server (API and UI) for the whole session: starting one costs ~20 s
    here. Flows run in the tests report to it; the UI test looks at them in Chromium."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        PrefectServer(tmp_path_factory.mktemp("prefect")) as server,
        temporary_settings({PREFECT_API_URL: server.url}),
    ):
        yield server
        _stop_sending_logs_to_the_server()


def _stop_sending_logs_to_the_server() -> None:
    """Flush Prefect's API log handlers, then detach them: worker pools and clusters log at
    interpreter exit, after the server is gone, which would only print connection errors."""
    import logging

    from prefect.logging.handlers import APILogHandler

    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, APILogHandler):
                handler.flush()
                logger.removeHandler(handler)
