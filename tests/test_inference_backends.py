"""Ray and Dask inference backends on real local clusters (one of each per module).

The model is ``tests.inference_test_models:ThresholdModel``, imported by path in the worker
processes; its in-process output is the reference.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pytest

from scopeflow import ConfigurationError, ShmFrameRef, ShmRing
from tasks.inference import (
    BackendConfig,
    BackendUnavailable,
    InferenceBackend,
    InferenceError,
    ObjectTable,
    chunk_indices,
    make_backend,
    measure_objects,
)
from tests.inference_test_models import POISON, ThresholdModel

MODELS = "tests.inference_test_models"
THRESHOLD = f"{MODELS}:ThresholdModel"

pytestmark = pytest.mark.timeout(120)


def make_frames(n: int, size: int = 128, seed: int = 0) -> list[np.ndarray]:
    """Distinct uint16 frames with a few bright blobs each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for _ in range(n):
        img = rng.normal(100, 5, (size, size))
        for cy, cx in rng.uniform(10, size - 10, (rng.integers(2, 6), 2)):
            img += 1000 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 25)
        frames.append(img.clip(0, 4000).astype(np.uint16))
    return frames


def reference(frames: list[np.ndarray]) -> list[np.ndarray]:
    model = ThresholdModel()
    return [model.segment(f) for f in frames]


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def children() -> dict[int, float]:
    """pid -> create time of every live descendant of this process, except multiprocessing's
    resource tracker: one per parent process, started by the stdlib with the first spawned
    child (here a Dask worker) and kept until the parent exits, by design."""
    out = {}
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "multiprocessing.resource_tracker" not in " ".join(p.cmdline()):
                out[p.pid] = p.create_time()
    return out


def alive(pid: int, created: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def shared_config(backend: InferenceBackend, model: str, **kw: object) -> BackendConfig:
    """A second backend on the cluster the module's backend started (Ray: the same session)."""
    address = backend.address if backend.config.kind == "dask" else None  # type: ignore[attr-defined]
    return BackendConfig(
        kind=backend.config.kind, address=address, workers=1, cpus_per_worker=0.5, model=model, **kw
    )


_before: dict[str, dict[int, float]] = {}


@pytest.fixture(scope="module", params=["ray", "dask"])
def backend(request: pytest.FixtureRequest) -> Iterator[InferenceBackend]:
    _before[request.param] = children()
    config = BackendConfig(kind=request.param, workers=2, cpus_per_worker=0.5, model=THRESHOLD)
    b = make_backend(config)
    yield b
    b.close()


def test_chunks_cover_every_frame_once() -> None:
    for n in range(0, 40):
        for workers in (1, 2, 3, 8):
            chunks = chunk_indices(n, workers)
            assert [i for c in chunks for i in c] == list(range(n))
            assert all(1 <= len(c) <= 8 for c in chunks)
            if n >= workers:
                assert len(chunks) >= workers


def test_unknown_model_fails_before_any_cluster_work() -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigurationError, match="unknown model 'no-such-model'"):
        make_backend(BackendConfig(kind="ray", model="no-such-model"))
    with pytest.raises(ConfigurationError, match="cannot import model factory"):
        make_backend(BackendConfig(kind="dask", model="no_such_module:Factory"))
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("kind", "address"), [("ray", "127.0.0.1:1"), ("dask", "tcp://127.0.0.1:1")]
)
def test_unreachable_address_names_it_and_the_fix(kind: str, address: str) -> None:
    config = BackendConfig(kind=kind, address=address, model=THRESHOLD, connect_timeout_s=2)
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1.*start one with"):
        make_backend(config)


class TestBackend:
    def test_labels_equal_in_process_output(self, backend: InferenceBackend) -> None:
        frames = make_frames(4)
        futures = [backend.submit(f, pixel_size_um=0.65) for f in frames]
        for got, want in zip(
            [f.result(timeout=60) for f in futures], reference(frames), strict=True
        ):
            assert got.dtype == np.int32
            assert got.max() > 0
            np.testing.assert_array_equal(got, want)

    def test_objects_measured_on_the_worker(self, backend: InferenceBackend) -> None:
        """``objects=True``: the worker sends the measured objects of the labels it made,
        the same as measuring those labels here, plus the model's own time."""
        frames = make_frames(3, seed=7)
        single = backend.submit(frames[0], pixel_size_um=0.65, objects=True).result(timeout=60)
        batch = backend.segment(frames, objects=True)
        for got, frame, labels in zip([single, *batch[1:]], frames, reference(frames), strict=True):
            want = measure_objects(labels, frame)
            assert isinstance(got, ObjectTable)
            assert len(got) == len(want) > 0
            np.testing.assert_array_equal(got.label, want.label)
            np.testing.assert_allclose(got.centroid_row, want.centroid_row)
            np.testing.assert_allclose(got.mean_intensity, want.mean_intensity)
            assert got.model_ms > 0

    def test_pre_put_ref_can_be_submitted_many_times(self, backend: InferenceBackend) -> None:
        frame = make_frames(1, seed=3)[0]
        ref = backend.put(frame)
        want = reference([frame])[0]
        for future in [backend.submit(ref) for _ in range(3)]:
            np.testing.assert_array_equal(future.result(timeout=60), want)

    def test_shared_memory_frame_refs_are_read_on_the_worker(
        self, backend: InferenceBackend
    ) -> None:
        """A ``ShmFrameRef`` (a few bytes) instead of the pixels: the worker, on this host,
        reads the frame from the ring itself; a slot reused before it reads is an error naming
        the frame, never another frame's labels."""
        frames = make_frames(2, seed=11)
        ring = ShmRing.create(slots=2, slot_bytes=frames[0].nbytes)
        try:
            refs = []
            for index, frame in enumerate(frames):
                ring.write(index, frame)
                refs.append(
                    ShmFrameRef(ring.name, 2, ring.slot_bytes, index, frame.shape, frame.dtype.str)
                )
            for got, want in zip(
                [backend.submit(r).result(timeout=60) for r in refs], reference(frames), strict=True
            ):
                np.testing.assert_array_equal(got, want)
            ring.write(2, frames[1])  # frame 2 reuses frame 0's slot
            with pytest.raises(InferenceError, match="frame 0 was overwritten"):
                backend.submit(refs[0], frame_index=7).result(timeout=60)
            gone = ShmFrameRef("psm_no_such_ring", 2, 64, 0, (4, 4), "<u2")
            with pytest.raises(InferenceError, match="only for workers on the edge's host"):
                backend.submit(gone).result(timeout=60)
        finally:
            ring.close()

    def test_batch_segment_preserves_order(self, backend: InferenceBackend) -> None:
        frames = make_frames(11, seed=5)
        got = backend.segment(frames)
        assert len(got) == len(frames)
        for g, w in zip(got, reference(frames), strict=True):
            np.testing.assert_array_equal(g, w)
        assert backend.segment([]) == []

    def test_model_loaded_once_per_worker(self, backend: InferenceBackend) -> None:
        before = backend.info()
        backend.segment(make_frames(6, seed=7))
        for f in [backend.submit(x) for x in make_frames(4, seed=8)]:
            f.result(timeout=60)
        after = backend.info()
        assert after["kind"] == backend.config.kind
        assert after["model"] == "threshold-test" and after["model_version"] == "1.0"
        assert after["workers"] == 2 and len(after["per_worker"]) == 2

        def key(w: dict) -> tuple:
            return (w["pid"], w["model_instance"])

        assert sorted(map(key, after["per_worker"])) == sorted(map(key, before["per_worker"]))
        assert all(w["loads_in_process"] == 1 for w in after["per_worker"])
        assert all(w["device"] == "cpu" for w in after["per_worker"])
        done = sum(w["frames"] for w in after["per_worker"])
        assert done - sum(w["frames"] for w in before["per_worker"]) == 10

    def test_failing_model_raises_inference_error(self, backend: InferenceBackend) -> None:
        with make_backend(shared_config(backend, f"{MODELS}:FailingModel")) as failing:
            frames = make_frames(5, seed=9)
            frames[3] = frames[3].copy()
            frames[3].flat[0] = POISON
            with pytest.raises(InferenceError, match="poisoned frame") as info:
                failing.segment(frames)
            assert info.value.frame_index == 3
            assert info.value.model == f"{MODELS}:FailingModel"
            assert "ValueError" in str(info.value)
            future = failing.submit(frames[3], frame_index=42)
            with pytest.raises(InferenceError, match=r"frame 42.*poisoned"):
                future.result(timeout=60)
            # the worker survives its model's exception
            np.testing.assert_array_equal(
                failing.submit(frames[0]).result(timeout=60), reference(frames[:1])[0]
            )
        # closing the second backend leaves the module's backend (and its cluster) working
        frames = make_frames(2, seed=10)
        assert_same(backend.segment(frames), reference(frames))

    def test_killed_worker(self, backend: InferenceBackend) -> None:
        """Ray: the in-flight frame fails with InferenceError naming the dead actor, a new
        actor takes later frames. Dask: the scheduler reruns the frame on another worker, the
        nanny restarts the dead one, whose plugin loads the model again."""
        slow_model = f"{MODELS}:SlowModel"
        config = shared_config(backend, slow_model, model_options={"delay_s": 1.0})
        with make_backend(config) as slow:
            frame = make_frames(1, seed=11)[0]
            want = reference([frame])[0]
            # (a Ray actor runs one call at a time: ask for its pid before it is busy)
            ray_pid = slow.info()["per_worker"][0]["pid"] if config.kind == "ray" else None
            future = slow.submit(frame, frame_index=7)
            assert not future.done()
            pid = ray_pid or _dask_running_pid(slow)
            os.kill(pid, signal.SIGKILL)
            if config.kind == "ray":
                with pytest.raises(InferenceError, match=r"Ray actor 0 .* died .*frame 7") as err:
                    future.result(timeout=60)
                assert "new actor" in str(err.value)
                np.testing.assert_array_equal(slow.submit(frame).result(timeout=60), want)
                info = slow.info()
                assert info["restarts"] == 1
                assert info["per_worker"][0]["pid"] != pid
            else:
                np.testing.assert_array_equal(future.result(timeout=60), want)
                assert future.done()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    workers = slow.info()["per_worker"]
                    if len(workers) == 2 and pid not in [w["pid"] for w in workers]:
                        break
                    time.sleep(0.2)
                assert len(workers) == 2 and pid not in [w["pid"] for w in workers]
                assert all(w["loads_in_process"] == 1 for w in workers)
        frames = make_frames(3, seed=12)
        assert_same(backend.segment(frames), reference(frames))

    def test_zz_close_leaves_no_processes(self, backend: InferenceBackend) -> None:
        kind = backend.config.kind
        started = {pid: t for pid, t in children().items() if _before[kind].get(pid) != t}
        assert started, "the backend started no processes?"
        backend.close()
        backend.close()  # idempotent
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p, t) for p, t in started.items()):
            time.sleep(0.2)
        left = {p: psutil.Process(p).cmdline()[:3] for p, t in started.items() if alive(p, t)}
        assert not left, f"{kind} left processes behind: {left}"
        with pytest.raises(InferenceError, match="closed"):
            backend.submit(make_frames(1)[0])


def _dask_running_pid(backend: InferenceBackend) -> int:
    """The pid of the Dask worker process running the slow backend's in-flight frame."""
    client = backend.client  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            return client.run(os.getpid, workers=busy[:1])[busy[0]]
        time.sleep(0.02)
    raise AssertionError("no Dask worker is processing the slow frame")
