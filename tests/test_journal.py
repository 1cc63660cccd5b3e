"""FrameJournal: round trips, series split, OME-NGFF validity, crash recovery, concurrency."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from scopeflow import JournalError
from tasks.storage import FrameJournal

REPO = Path(__file__).resolve().parents[1]
SPEC_SCRIPT = REPO.parent / "shared/data/ome_ngff_spec/validate_store_with_spec_schemas.py"
# the spec-schema script needs jsonschema, which the dev venv may lack: point this at a python
# that has it (e.g. SCOPEFLOW_SPEC_SCHEMA_PYTHON=/path/to/venv/bin/python) to run it anyway
SPEC_PYTHON = os.environ.get("SCOPEFLOW_SPEC_SCHEMA_PYTHON", sys.executable)
BIN = Path(sys.executable).parent


def frame(i: int, shape: tuple[int, int] = (64, 96), dtype: str = "uint16") -> np.ndarray:
    """Deterministic, distinct content per index (so a mix-up shows)."""
    y, x = np.indices(shape)
    return ((y * 31 + x * 7 + i * 1009) % 4096).astype(dtype)


def validate_api(store: Path) -> None:
    """Both validators through their Python APIs (fast; used many times)."""
    import ome_zarr_models
    import yaozarrs
    from ome_zarr_models.exceptions import ValidationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ValidationWarning)
        ome_zarr_models.open_ome_zarr(str(store))
    yaozarrs.validate_zarr_store(str(store))


def validate_cli(store: Path) -> None:
    """Both validators' CLIs (slow: about 2 s a store, so a bounded number of calls)."""
    for cmd in (
        [str(BIN / "ome-zarr-models"), "validate", str(store)],
        [str(BIN / "yaozarrs"), "validate", str(store)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{cmd[0]} failed on {store}:\n{done.stdout}{done.stderr}"


def validate_spec_schemas(store: Path) -> None:
    """The official OME-NGFF 0.5 JSON schemas (strict), via the shared script."""
    cmd = [SPEC_PYTHON, str(SPEC_SCRIPT), str(store), "--strict"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"spec schemas reject {store}:\n{done.stdout}{done.stderr}"
    assert "PASS" in done.stdout and "FAIL" not in done.stdout


def spec_schema_skip_reason() -> str | None:
    if not SPEC_SCRIPT.is_file():
        return f"official NGFF spec schemas not found at {SPEC_SCRIPT} (shared data absent)"
    if sys.executable == SPEC_PYTHON and importlib.util.find_spec("jsonschema") is None:
        return (
            "the spec-schema script needs jsonschema, not installed in this venv: pip install "
            "jsonschema, or set SCOPEFLOW_SPEC_SCHEMA_PYTHON to a python that has it"
        )
    return None


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "journal"


# ------------------------------------------------------------------ round trips


def test_round_trip_pixels_and_meta(root: Path) -> None:
    meta = [
        {"event": {"index": {"t": i, "p": 0}, "x_pos": 1.5 * i}, "ts": f"2025-01-0{i + 1}"}
        for i in range(3)
    ]
    with FrameJournal.create(root) as j:
        assert len(j) == 0 and j.stores == []
        for i in range(3):
            assert j.append(frame(i), meta[i], pixel_size_um=0.65) == i
        assert len(j) == 3
        for i in range(3):
            np.testing.assert_array_equal(j.read(i), frame(i))
            assert j.read_meta(i) == {"index": i, "series": 0, "series_index": i, "meta": meta[i]}
        np.testing.assert_array_equal(j.read(-1), frame(2))
        with pytest.raises(IndexError):
            j.read(3)
    with FrameJournal.open(root) as r:
        assert len(r) == 3 and r.stores == [root / "s0.ome.zarr"]
        np.testing.assert_array_equal(r.read(1), frame(1))
        assert r.read_meta(2)["meta"] == meta[2]
    lines = (root / "frames.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
    doc = json.loads((root / "journal.json").read_text())
    assert doc["series"] == [
        {
            "series": 0,
            "store": "s0.ome.zarr",
            "shape": [64, 96],
            "dtype": "uint16",
            "pixel_size_um": 0.65,
        }
    ]


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", ">u2"])
def test_round_trip_other_dtypes(root: Path, dtype: str) -> None:
    pixels = frame(5, (16, 8), dtype)
    with FrameJournal.create(root) as j:
        j.append(pixels, {})
        out = j.read(0)
    np.testing.assert_array_equal(out, pixels)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(zarr.open_array(root / "s0.ome.zarr" / "0")[0], pixels)


def test_series_split_on_shape_dtype_and_pixel_size(root: Path) -> None:
    plan = [  # (shape, dtype, pixel size) -> expected series
        ((64, 96), "uint16", 0.65, 0),
        ((64, 96), "uint16", 0.65, 0),
        ((64, 96), "uint16", 0.1625, 1),  # objective switch 10x -> 40x
        ((32, 48), "uint16", 0.325, 2),  # binning 2
        ((64, 96), "uint16", 0.65, 0),  # back to the first configuration
        ((64, 96), "uint8", 0.65, 3),
        ((64, 96), "uint16", None, 4),  # pixel size unknown
    ]
    with FrameJournal.create(root, name="split") as j:
        for i, (shape, dtype, px, series) in enumerate(plan):
            j.append(frame(i, shape, dtype), {"i": i}, pixel_size_um=px)
            assert j.read_meta(i)["series"] == series
        assert [p.name for p in j.stores] == [f"s{k}.ome.zarr" for k in range(5)]
        assert j.read_meta(4)["series_index"] == 2
        for i, (shape, dtype, _, _) in enumerate(plan):
            np.testing.assert_array_equal(j.read(i), frame(i, shape, dtype))
    assert zarr.open_array(root / "s0.ome.zarr" / "0").shape == (3, 64, 96)
    ms = json.loads((root / "s1.ome.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    assert ms["version"] == "0.5"
    (m,) = ms["multiscales"]
    assert [a["name"] for a in m["axes"]] == ["t", "y", "x"]
    assert [a["type"] for a in m["axes"]] == ["time", "space", "space"]
    assert m["axes"][1]["unit"] == "micrometer"
    assert m["datasets"] == [
        {
            "path": "0",
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.1625, 0.1625]}],
        }
    ]
    unknown = json.loads((root / "s4.ome.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    axes = unknown["multiscales"][0]["axes"]
    assert all("unit" not in a for a in axes)
    assert unknown["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        1.0,
        1.0,
        1.0,
    ]
    for store in sorted(root.glob("s*.ome.zarr")):
        validate_api(store)


# ------------------------------------------------------------------ validity


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_zarr_python_reads_the_same_pixels(root: Path, compression: str) -> None:
    with FrameJournal.create(root, compression=compression) as j:  # type: ignore[arg-type]
        for i in range(4):
            j.append(frame(i, (128, 128)), {"i": i}, pixel_size_um=0.5)
        for i in range(4):
            np.testing.assert_array_equal(j.read(i), frame(i, (128, 128)))
    arr = zarr.open_array(root / "s0.ome.zarr" / "0", mode="r")
    assert arr.shape == (4, 128, 128) and arr.chunks == (1, 128, 128)
    assert arr.metadata.dimension_names == ("t", "y", "x")
    np.testing.assert_array_equal(arr[:], np.stack([frame(i, (128, 128)) for i in range(4)]))
    group = zarr.open_group(root / "s0.ome.zarr", mode="r")
    assert group.attrs["ome"]["version"] == "0.5"
    if compression != "none":  # really compressed
        assert (root / "s0.ome.zarr/0/c/0/0/0").stat().st_size < 128 * 128 * 2
    validate_api(root / "s0.ome.zarr")


def test_valid_with_both_validator_clis_after_one_and_several_appends(root: Path) -> None:
    j = FrameJournal.create(root)
    j.append(frame(0), {"i": 0}, pixel_size_um=0.65)
    validate_cli(root / "s0.ome.zarr")  # after exactly one frame, journal still open
    for i in range(1, 6):
        j.append(frame(i), {"i": i}, pixel_size_um=0.65 if i < 4 else None)
        for store in j.stores:
            validate_api(store)
    for store in j.stores:  # mid-run: the writer is still open
        validate_cli(store)
    j.close()


@pytest.mark.skipif(spec_schema_skip_reason() is not None, reason=str(spec_schema_skip_reason()))
@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_valid_with_spec_schemas_after_one_and_several_appends(
    root: Path, compression: str
) -> None:
    j = FrameJournal.create(root, compression=compression)  # type: ignore[arg-type]
    j.append(frame(0), {"i": 0}, pixel_size_um=0.65)
    validate_spec_schemas(root / "s0.ome.zarr")
    for i in range(1, 4):
        j.append(frame(i), {"i": i}, pixel_size_um=0.65 if i < 3 else None)
    for store in j.stores:
        validate_spec_schemas(store)
    j.close()


# ------------------------------------------------------------------ crash recovery


def _write_frames(root: Path, n: int, **kw: object) -> None:
    j = FrameJournal.create(root, **kw)  # type: ignore[arg-type]
    for i in range(n):
        j.append(frame(i), {"i": i}, pixel_size_um=0.65)
    j.close()


def test_reopen_after_truncated_last_metadata_line(root: Path) -> None:
    _write_frames(root, 4)
    log = root / "frames.jsonl"
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 9])  # the crash cut the last line short
    with FrameJournal.open(root) as r:  # read-only: sees 3, changes nothing
        assert len(r) == 3
    assert log.read_bytes() == data[: len(data) - 9]
    with pytest.warns(RuntimeWarning, match="recovered journal"):
        j = FrameJournal.open(root, writable=True)
    assert len(j) == 3
    assert zarr.open_array(root / "s0.ome.zarr" / "0").shape == (3, 64, 96)
    validate_api(root / "s0.ome.zarr")
    assert j.append(frame(99), {"i": 99}, pixel_size_um=0.65) == 3
    np.testing.assert_array_equal(j.read(3), frame(99))
    assert j.read_meta(3)["meta"] == {"i": 99}
    j.close()
    assert len(FrameJournal.open(root)) == 4
    assert (root / "frames.jsonl.discarded").exists()


def test_reopen_after_chunk_written_without_metadata(root: Path) -> None:
    _write_frames(root, 3)
    array = root / "s0.ome.zarr" / "0"
    # crash after steps 1-2 of append 3 (pixels + shape) but before its log line ...
    (array / "c/3/0").mkdir(parents=True)
    (array / "c/3/0/0").write_bytes(frame(3).astype("<u2").tobytes())
    meta = json.loads((array / "zarr.json").read_text())
    meta["shape"][0] = 4
    (array / "zarr.json").write_text(json.dumps(meta))
    # ... and a half-written chunk of append 4 beyond the shape
    (array / "c/4/0").mkdir(parents=True)
    (array / "c/4/0/0").write_bytes(b"\0" * 100)
    with FrameJournal.open(root) as r:
        assert len(r) == 3
    with pytest.warns(RuntimeWarning, match="rolled back from 4 to 3"):
        j = FrameJournal.open(root, writable=True)
    assert len(j) == 3
    assert zarr.open_array(array).shape == (3, 64, 96)
    assert not (array / "c/3").exists() and not (array / "c/4").exists()
    validate_api(root / "s0.ome.zarr")
    assert j.append(frame(7), {"i": 7}, pixel_size_um=0.65) == 3
    j.close()
    with FrameJournal.open(root) as r:
        np.testing.assert_array_equal(r.read(3), frame(7))
        assert zarr.open_array(array).shape == (4, 64, 96)


def test_reopen_after_crash_while_starting_a_series(root: Path) -> None:
    _write_frames(root, 2)
    # a new series whose store was renamed into place and listed, but whose line never came
    with FrameJournal.open(root, writable=True) as j:
        j.append(frame(2, (16, 16)), {"i": 2})
    log = root / "frames.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))
    (root / ".s9.ome.zarr.abc.partial").mkdir()  # a scratch folder left by a crash
    with FrameJournal.open(root) as r:
        assert len(r) == 2
    with pytest.warns(RuntimeWarning, match="s1.ome.zarr removed"):
        j = FrameJournal.open(root, writable=True)
    assert j.stores == [root / "s0.ome.zarr"] and len(j) == 2
    assert not (root / "s1.ome.zarr").exists() and not (root / ".s9.ome.zarr.abc.partial").exists()
    assert j.append(frame(3, (16, 16)), {"i": 3}) == 2
    assert j.read_meta(2)["series"] == 1
    j.close()


def test_reopen_rebuilds_zero_filled_array_metadata(root: Path) -> None:
    _write_frames(root, 3)
    meta_path = root / "s0.ome.zarr" / "0" / "zarr.json"
    meta_path.write_bytes(b"\0" * meta_path.stat().st_size)  # power cut, no fsync
    with pytest.raises(JournalError, match=r"writable=True\) to rebuild"):
        FrameJournal.open(root)
    with pytest.warns(RuntimeWarning):
        j = FrameJournal.open(root, writable=True)
    assert len(j) == 3
    j.close()
    np.testing.assert_array_equal(zarr.open_array(meta_path.parent)[2], frame(2))
    validate_api(root / "s0.ome.zarr")


# ------------------------------------------------------------------ concurrency

READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np, zarr
    sys.path.insert(0, sys.argv[2])
    from tasks.storage import FrameJournal
    from tests.test_journal import frame

    root = Path(sys.argv[1])
    j = FrameJournal.open(root)
    (root.parent / "reader_ready").touch()
    seen, checks, deadline = 0, 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        done = (root.parent / "writer_done").exists()
        n = len(j)
        for i in range(seen, n):
            m = j.read_meta(i)
            shape = tuple(m["meta"]["shape"])
            assert m["index"] == i and m["meta"]["i"] == i, m
            assert np.array_equal(j.read(i), frame(i, shape)), f"pixels of frame {i}"
        seen = n
        for store in j.stores:  # every metadata file parses; shape == chunks present
            meta = json.loads((store / "0" / "zarr.json").read_text())
            t = meta["shape"][0]
            assert t >= 1 and (store / "0" / "c" / str(t - 1) / "0" / "0").is_file(), store
            arr = zarr.open_array(store / "0", mode="r")
            assert arr.shape[0] >= t and not np.all(arr[t - 1] == 0), store
            checks += 1
        if done and seen == int((root.parent / "writer_done").read_text()):
            break
    print(json.dumps({"seen": seen, "checks": checks}))
    """
)


def test_concurrent_reader_process_sees_only_consistent_states(tmp_path: Path) -> None:
    root = tmp_path / "journal"
    j = FrameJournal.create(root)
    script = tmp_path / "reader.py"
    script.write_text(READER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "reader_ready").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "reader did not start"
            time.sleep(0.02)
        n = 80
        for i in range(n):
            shape = (64, 96) if (i // 20) % 2 == 0 else (32, 32)  # switch series mid-run
            j.append(frame(i, shape), {"i": i, "shape": list(shape)}, pixel_size_um=0.65)
            time.sleep(0.002)
        (tmp_path / "writer_done").write_text(str(n))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        j.close()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["seen"] == n and result["checks"] > 0


def test_array_metadata_rewrites_leave_open_readers_whole_and_no_scratch(root: Path) -> None:
    """Each append swaps in a new zarr.json (renameat2 RENAME_EXCHANGE on Linux, a rename
    elsewhere): a reader that opened the old one reads it whole, and no scratch file stays."""
    j = FrameJournal.create(root)
    j.append(frame(0), {"i": 0}, pixel_size_um=0.65)
    meta = root / "s0.ome.zarr" / "0" / "zarr.json"
    with open(meta, "rb") as before:
        for i in range(1, 4):
            j.append(frame(i), {"i": i}, pixel_size_um=0.65)
        assert json.loads(before.read())["shape"][0] == 1
    assert json.loads(meta.read_text())["shape"][0] == 4
    assert not list(meta.parent.glob(".*partial"))
    assert zarr.open_array(meta.parent, mode="r").shape == (4, 64, 96)
    j.close()


def test_threads_append_concurrently(root: Path) -> None:
    j = FrameJournal.create(root)
    got: dict[int, int] = {}
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for k in range(10):
                i = w * 100 + k
                idx = j.append(frame(i, (32, 32)), {"i": i}, pixel_size_um=1.0 + w % 2)
                got[idx] = i
                np.testing.assert_array_equal(j.read(idx), frame(i, (32, 32)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(got) == list(range(40)) and len(j) == 40
    for idx, i in got.items():
        assert j.read_meta(idx)["meta"]["i"] == i
    j.close()
    with FrameJournal.open(root) as r:
        assert len(r) == 40
        assert sorted(
            r.read_meta(i)["series_index"] for i in range(40) if r.read_meta(i)["series"] == 0
        ) == list(range(20))


def test_second_writer_is_refused(root: Path) -> None:
    with FrameJournal.create(root) as j:
        j.append(frame(0), {})
        with pytest.raises(JournalError, match="already open for writing"):
            FrameJournal.open(root, writable=True)
        with FrameJournal.open(root) as r:  # readers are welcome
            assert len(r) == 1
            with pytest.raises(JournalError, match="read-only"):
                r.append(frame(1), {})
    with FrameJournal.open(root, writable=True) as j2:  # lock released by close
        assert j2.append(frame(1), {}) == 1


# ------------------------------------------------------------------ bad input, failures


def test_bad_input_is_refused_and_nothing_is_lost(root: Path) -> None:
    j = FrameJournal.create(root)
    j.append(frame(0), {"i": 0}, pixel_size_um=0.65)
    before = (root / "frames.jsonl").read_bytes()
    with pytest.raises(JournalError, match="2D"):
        j.append(np.zeros((2, 8, 8), np.uint16), {})
    with pytest.raises(JournalError, match="2D"):
        j.append(np.zeros(8, np.uint16), {})
    with pytest.raises(JournalError, match="not JSON-serialisable"):
        j.append(frame(1), {"when": object()})
    with pytest.raises(JournalError, match="not JSON-serialisable"):
        j.append(frame(1), {"x": float("nan")})
    with pytest.raises(JournalError, match="not JSON-serialisable"):
        j.append(frame(1), {"v": np.float32(1.0)})
    with pytest.raises(JournalError, match="mapping"):
        j.append(frame(1), [1, 2])  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="dtype"):
        j.append(np.zeros((4, 4), complex), {})
    with pytest.raises(JournalError, match="pixel_size_um"):
        j.append(frame(1), {}, pixel_size_um=-1.0)
    with pytest.raises(JournalError, match="pixel_size_um"):
        j.append(frame(1), {}, pixel_size_um=float("inf"))
    assert len(j) == 1 and (root / "frames.jsonl").read_bytes() == before
    assert j.stores == [root / "s0.ome.zarr"]
    assert zarr.open_array(root / "s0.ome.zarr" / "0").shape == (1, 64, 96)
    assert j.append(frame(1), {"i": 1}, pixel_size_um=0.65) == 1
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.append(frame(2), {})


def test_create_and_open_errors(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(JournalError, match="not empty"):
        FrameJournal.create(tmp_path / "full")
    with pytest.raises(JournalError, match="not a frame journal"):
        FrameJournal.open(tmp_path / "full")
    with pytest.raises(JournalError, match="compression"):
        FrameJournal.create(tmp_path / "new", compression="gzip")  # type: ignore[arg-type]
    FrameJournal.create(tmp_path / "j").close()
    with pytest.raises(JournalError, match=r"FrameJournal\.open"):
        FrameJournal.create(tmp_path / "j")
    FrameJournal.create(tmp_path / "empty_ok").close()  # missing folder is fine
    (tmp_path / "e").mkdir()
    FrameJournal.create(tmp_path / "e").close()  # empty folder is fine


def test_log_write_failure_rolls_back(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.storage._journal_writer as jmod  # noqa: PLC2701 - white-box: the writer itself

    j = FrameJournal.create(root)
    j.append(frame(0), {"i": 0}, pixel_size_um=0.65)
    real = jmod.write_all

    def half_then_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jmod, "write_all", half_then_full)
    with pytest.raises(JournalError, match=r"No space left.*free disk space"):
        j.append(frame(1), {"i": 1}, pixel_size_um=0.65)  # existing series
    with pytest.raises(JournalError, match=r"frames\.jsonl"):
        j.append(frame(1, (8, 8)), {"i": 1})  # would start a new series
    monkeypatch.setattr(jmod, "write_all", real)
    assert len(j) == 1 and j.stores == [root / "s0.ome.zarr"]
    assert not (root / "s1.ome.zarr").exists()
    assert zarr.open_array(root / "s0.ome.zarr" / "0").shape == (1, 64, 96)
    assert len((root / "frames.jsonl").read_bytes().splitlines()) == 1
    validate_api(root / "s0.ome.zarr")
    assert j.append(frame(1), {"i": 1}, pixel_size_um=0.65) == 1
    j.close()
    with FrameJournal.open(root) as r:
        assert len(r) == 2
        np.testing.assert_array_equal(r.read(1), frame(1))


def test_metadata_write_failure_keeps_state(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.storage._series as smod  # noqa: PLC2701 - white-box: the series store

    j = FrameJournal.create(root)
    j.append(frame(0), {"i": 0}, pixel_size_um=0.65)

    def refuse(tmp: str, path: str, data: bytes) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(smod, "replace_file", refuse)
    with pytest.raises(JournalError, match=r"zarr\.json.*Permission denied"):
        j.append(frame(1), {"i": 1}, pixel_size_um=0.65)
    monkeypatch.undo()
    assert not (root / "s0.ome.zarr/0/c/1/0/0").exists()  # the orphan chunk was removed
    assert len(j) == 1
    assert j.append(frame(1), {"i": 1}, pixel_size_um=0.65) == 1
    j.close()


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from scopeflow import JournalError
    from tasks.storage import FrameJournal

    j = FrameJournal.open(Path(sys.argv[1]), writable=True)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    for shape in ((512, 512), (256, 256)):  # existing series, then a new one
        try:
            j.append(np.ones(shape, np.uint16), {"i": 9}, pixel_size_um=0.65)
        except JournalError as exc:
            print("JournalError:", exc)
        else:
            sys.exit("append of a frame bigger than the file size limit did not fail")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX-only")
def test_real_write_failure_full_disk(root: Path, tmp_path: Path) -> None:
    j = FrameJournal.create(root)
    for i in range(2):
        j.append(frame(i, (512, 512)), {"i": i}, pixel_size_um=0.65)
    j.close()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    done = subprocess.run(
        [sys.executable, str(script), str(root), str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("JournalError:") == 2
    assert "free disk space" in done.stdout and str(root) in done.stdout
    with FrameJournal.open(root) as r:
        assert len(r) == 2 and len(r.stores) == 1
        for i in range(2):
            np.testing.assert_array_equal(r.read(i), frame(i, (512, 512)))
    validate_api(root / "s0.ome.zarr")
    assert zarr.open_array(root / "s0.ome.zarr" / "0").shape == (2, 512, 512)
    with FrameJournal.open(root, writable=True) as j:
        assert j.append(frame(2, (512, 512)), {"i": 2}, pixel_size_um=0.65) == 2


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0,
    reason="root ignores folder permissions, so a read-only folder cannot be simulated",
)
def test_unwritable_folder(root: Path) -> None:
    j = FrameJournal.create(root)
    j.append(frame(0), {"i": 0})
    for p in [root, *root.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    try:
        with pytest.raises(JournalError, match="permissions"):
            j.append(frame(1), {"i": 1})
        with pytest.raises(JournalError, match="permissions"):
            j.append(frame(1, (8, 8)), {"i": 1})
    finally:
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
    assert len(j) == 1
    j.close()


# ------------------------------------------------------------------ bounded index


def _meta(i: int, rng: np.random.Generator) -> dict:
    """Lines of uneven length: mostly ~100-400 bytes, now and then one longer than 8 KiB."""
    pad = "x" * (20_000 if i % 97 == 13 else int(rng.integers(0, 300)))
    return {"i": i, "pad": pad}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frame_index_memory_is_bounded_and_old_frames_are_found(root: Path, seed: int) -> None:
    """With a window of 16 frames, the index's memory is the same after 20 frames and after
    600; every frame (old ones from the log, by the search) reads back in any order."""
    rng = np.random.default_rng(seed)
    shapes = [(8, 8), (8, 12)]
    expected: dict[int, tuple[int, tuple[int, int]]] = {}
    with FrameJournal.create(root, index_window=16) as j:
        for i in range(600):
            shape = shapes[(i // int(rng.integers(5, 40))) % 2]
            assert j.append(frame(i, shape), _meta(i, rng), pixel_size_um=0.5) == i
            expected[i] = (i, shape)
            if i == 19:
                early = j.index_memory_bytes
        assert j.index_memory_bytes == early
        order = [int(k) for k in rng.permutation(600)] + list(range(600))
        for k in order:
            assert j.read_meta(k)["meta"]["i"] == k
            np.testing.assert_array_equal(j.read(k), frame(k, expected[k][1]))
    with FrameJournal.open(root, index_window=8) as r:
        assert len(r) == 600 and r.index_memory_bytes < early
        for k in [int(k) for k in rng.permutation(600)[:200]] + [599, 0, 1, 2]:
            assert r.read_meta(k)["meta"]["i"] == k
            np.testing.assert_array_equal(r.read(k), frame(k, expected[k][1]))


def test_frame_index_after_recovery_and_bad_window(root: Path) -> None:
    with FrameJournal.create(root, index_window=4) as j:
        for i in range(50):
            j.append(frame(i), {"i": i, "pad": "y" * (i * 37 % 500)})
    with open(root / "frames.jsonl", "ab") as f:
        f.write(b'{"index":50,"series":0,"ser')  # a crash mid-line
    with pytest.warns(RuntimeWarning, match="moved to"):
        j = FrameJournal.open(root, writable=True, index_window=4)
    with j:
        assert j.append(frame(50), {"i": 50}) == 50
        for k in (0, 49, 50, 17, 18, 3):
            assert j.read_meta(k)["meta"]["i"] == k
            np.testing.assert_array_equal(j.read(k), frame(k))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(JournalError, match="index_window"):
            FrameJournal.open(root, index_window=bad)  # type: ignore[arg-type]
