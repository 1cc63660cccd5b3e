"""A worker killed (SIGKILL) mid-inference, on real local Ray and Dask clusters: ``segment``
loses no frame and repeats none, and its results equal those of an undisturbed run."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from tasks.inference import BackendConfig, InferenceBackend, make_backend

MODEL = "tests.inference_test_models:SlowModel"
FRAMES = 48


def _frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(FRAMES):
        frame = rng.integers(80, 120, (48, 48)).astype(np.uint16)
        y, x = rng.integers(4, 30, 2)
        frame[y : y + 12, x : x + 12] += 1000
        frames.append(frame)
    return frames


def _busy_worker_pid(backend: InferenceBackend, kind: str, pids: list[int]) -> int:
    """The pid of a worker that is segmenting right now."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if kind == "ray":
            in_flight = backend.in_flight()  # type: ignore[attr-defined]
            if in_flight[0] > 1:  # running one chunk, more queued behind it
                return pids[0]
        else:
            client = backend.client  # type: ignore[attr-defined]
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                return client.run(os.getpid, workers=busy[:1])[busy[0]]
        time.sleep(0.01)
    raise AssertionError("no worker became busy")


@pytest.mark.parametrize("kind", ["ray", "dask"])
def test_a_worker_killed_mid_inference_loses_and_repeats_no_frame(kind: str) -> None:
    config = BackendConfig(kind=kind, workers=2, model=MODEL, model_options={"delay_s": 0.03})
    with make_backend(config) as backend:
        pids = [w["pid"] for w in backend.info()["per_worker"]]
        for seed in (0, 1):  # two runs, a kill in each, at a different moment
            frames = _frames(seed)
            undisturbed = backend.segment(frames)
            killed: list[int] = []

            def kill(seed: int = seed, pids: list[int] = pids, killed: list[int] = killed) -> None:
                pid = _busy_worker_pid(backend, kind, pids)
                time.sleep(0.05 * seed)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

            killer = threading.Thread(target=kill)
            killer.start()
            disturbed = backend.segment(frames)
            killer.join()
            assert killed, "the worker was not killed"
            assert len(disturbed) == len(undisturbed) == FRAMES  # 0 lost, 0 repeated
            for got, want in zip(disturbed, undisturbed, strict=True):
                np.testing.assert_array_equal(got, want)
            pids = [w["pid"] for w in _settled_workers(backend)]
            assert killed[0] not in pids
        if kind == "ray":
            assert backend.restarts == 2  # type: ignore[attr-defined]


def _settled_workers(backend: InferenceBackend) -> list[dict]:
    """The workers, once a killed one has been replaced (Ray at once, Dask by its nanny)."""
    deadline = time.monotonic() + 60
    while True:
        workers = backend.info()["per_worker"]
        if len(workers) == 2 or time.monotonic() > deadline:
            return workers
        time.sleep(0.2)
