"""The spill-and-drain spool's guarantees with OMERO unreachable: nothing lost, bounded memory,
order kept, resumed after the process is killed, duplicates avoided by key."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from scopeflow import OmeroError, OmeroSettings
from tasks.storage.omero import OmeroRegistrar, OmeroSpool, RegistrationRequest
from tests.test_omero_support import DirRegistrar, closed_port, require_omero_py

REPO = Path(__file__).resolve().parents[1]
_CHILD = """
import sys
from pathlib import Path
from tasks.storage.omero import OmeroSpool
from tests.test_omero_support import DirRegistrar
uploader = DirRegistrar(Path(sys.argv[2]), die_at=int(sys.argv[3]), delay_s=float(sys.argv[4]))
with OmeroSpool(Path(sys.argv[1]), uploader, max_items=8, retry_initial_s=0.01) as spool:
    sys.exit(0 if spool.drain(timeout=60) else 3)
"""


def _request(i: int, padding: int = 0) -> RegistrationRequest:
    return RegistrationRequest(
        path=Path(f"/data/run-7/s{i}.ome.zarr"),
        project="screen",
        dataset="run-7",
        run_id="run-7",
        metadata={"index": i, "notes": "x" * padding},
    )


def _drain_in_child(spool: Path, server: Path, *, die_at: int = 0, delay_s: float = 0.0):
    command = [sys.executable, "-c", _CHILD, str(spool), str(server), str(die_at), str(delay_s)]
    return subprocess.Popen(command, cwd=REPO)


def test_server_down_1000_submissions_bounded_memory_then_all_delivered_in_order(tmp_path):
    down = tmp_path / "server-is-down"
    down.touch()
    server = DirRegistrar(tmp_path / "server", down=down)
    bound = 64 * 1024
    spool = OmeroSpool(
        tmp_path / "spool",
        server,
        max_items=1000,
        max_bytes=bound,
        retry_initial_s=0.01,
        retry_max_s=0.05,
        fsync=False,  # fsync guards against power cuts; the kill -9 tests below run with it
    ).start()
    requests = [_request(i, padding=4000) for i in range(1000)]  # ~4 MB in all
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    slowest = 0.0
    for request in requests:
        start = time.perf_counter()
        spool.submit(request)
        slowest = max(slowest, time.perf_counter() - start)
    grown = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    stats = spool.stats()
    assert stats.pending == 1000 and stats.delivered == 0
    assert "is down" in (stats.last_error or "")
    assert 0 < stats.peak_memory_bytes <= bound  # the drainer read ahead, up to the bound
    assert grown < 1_000_000, f"submitting 4 MB of requests grew memory by {grown} bytes"
    assert slowest < 1.0, f"a submit took {slowest:.3f} s with the server down"

    down.unlink()  # the server is back
    assert spool.wait_empty(timeout=60)
    spool.close()
    keys = [r.key for r in requests]
    assert server.created() == keys  # everything, once, in submission order
    assert server.calls() == keys
    assert spool.stats().peak_memory_bytes <= bound
    assert all(spool.result(k).image_ids == (i + 1,) for i, k in enumerate(keys))


def test_kill_9_after_the_server_took_it_resumes_without_duplicates(tmp_path):
    spool_dir, server_dir = tmp_path / "spool", tmp_path / "server"
    spool = OmeroSpool(spool_dir, DirRegistrar(server_dir))
    keys = [spool.submit(_request(i)) for i in range(40)]
    # the child dies by SIGKILL just after the server created image 15, before the spool logged it
    assert _drain_in_child(spool_dir, server_dir, die_at=15).wait(60) == -9
    server = DirRegistrar(server_dir)
    assert server.created() == keys[:15]
    assert len(list((spool_dir / "pending").glob("*.json"))) == 40 - 14
    assert _drain_in_child(spool_dir, server_dir).wait(60) == 0  # a restart resumes
    assert server.created() == keys  # each image created exactly once, in order
    assert server.calls() == keys[:15] + keys[14:]  # image 15 was handed over twice
    assert list((spool_dir / "pending").glob("*.json")) == []
    assert {p.stem for p in (spool_dir / "done").glob("*.json")} == set(keys)
    assert spool.result(keys[14]).image_ids == (15,)


def test_kill_9_from_outside_mid_drain_loses_nothing(tmp_path):
    spool_dir, server_dir = tmp_path / "spool", tmp_path / "server"
    spool = OmeroSpool(spool_dir, DirRegistrar(server_dir))
    keys = [spool.submit(_request(i)) for i in range(40)]
    # 0.1 s an image: 3 s between the 10th image and the last, for this loaded process to kill it
    child = _drain_in_child(spool_dir, server_dir, delay_s=0.1)
    server = DirRegistrar(server_dir)
    deadline = time.monotonic() + 30
    while len(server.created()) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    child.kill()  # SIGKILL
    assert child.wait(10) == -9
    assert 10 <= len(server.created()) < 40
    assert _drain_in_child(spool_dir, server_dir).wait(60) == 0
    assert server.created() == keys
    assert set(server.calls()) == set(keys) and len(server.calls()) <= 41


def test_same_key_twice_is_delivered_once(tmp_path):
    server = DirRegistrar(tmp_path / "server")
    with OmeroSpool(tmp_path / "spool", server) as spool:
        first = spool.submit(_request(1))
        again = spool.submit(_request(1))  # same content, same derived key
        assert first == again
        assert spool.drain(timeout=10)
        assert server.calls() == [first]
        assert spool.stats().duplicates == 1


def test_real_registrar_with_omero_refusing_keeps_requests_and_rejects_bad_ones(tmp_path):
    require_omero_py()
    port = closed_port()
    settings = OmeroSettings(
        host="127.0.0.1",
        port=port,
        username="u",
        password="p",
        spill_dir=tmp_path / "spool",
        retry_initial_s=0.01,
        retry_max_s=0.02,
    )
    import numpy as np

    from tasks.storage import write_zstack

    store = write_zstack(tmp_path / "a.ome.zarr", np.zeros((2, 8, 8), "uint16"), pixel_size_um=1)
    good = RegistrationRequest(path=store, project="p", dataset="d")
    bad = RegistrationRequest(path=tmp_path / "missing.ome.zarr", project="p", dataset="d")
    with OmeroRegistrar(settings) as registrar:
        spool = OmeroSpool.from_settings(settings, registrar)
        spool.submit(bad)
        spool.submit(good)
        assert not spool.drain(timeout=0.3)  # OMERO refuses: the good one waits
        spool.close()
    [(_name, reason)] = spool.failures()
    assert "missing.ome.zarr does not exist" in reason
    stats = spool.stats()
    assert stats.pending == 1 and f"127.0.0.1:{port} refused" in (stats.last_error or "")
    # the server comes back (a stand-in here) and a new process drains what waited
    server = DirRegistrar(tmp_path / "server")
    with OmeroSpool.from_settings(settings, server) as again:
        assert again.drain(timeout=10)
    assert server.created() == [good.key]
    assert again.requeue_failed() == 1 and again.failures() == []


def test_one_drainer_per_spool(tmp_path):
    server = DirRegistrar(tmp_path / "server")
    with OmeroSpool(tmp_path / "spool", server).start():
        other = OmeroSpool(tmp_path / "spool", server)
        other.submit(_request(1))  # submitting is always allowed
        with pytest.raises(OmeroError, match="being drained by another process"):
            other.drain(timeout=1)
