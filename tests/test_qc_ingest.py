"""The watched-folder source (tasks.live): complete files only, each once across restarts,
bad files as verdicts, a folder that goes away and comes back; QC over it (tasks.qc)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from tasks.live import (
    Analyzer,
    AnalyzerSettings,
    CompletionRule,
    LiveFrame,
    VendorProfile,
    WatchedFolderSource,
)
from tasks.qc import EMMosaicSimulator, QCConfig, QCJudge, QCWorkers, run_qc, write_sem_tiff

REPO = Path(__file__).resolve().parents[1]
FAST = VendorProfile(
    name="test", patterns=("*.tif", "*.mrc"), rule=CompletionRule(stable_s=0.3, give_up_s=1.5)
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _collect(source: WatchedFolderSource, out: list[LiveFrame]) -> threading.Thread:
    def run() -> None:
        for frame in source.frames():
            out.append(frame)
            source.done(frame, {"seen": True})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture()
def tiles() -> list:
    return list(EMMosaicSimulator(rows=2, cols=3, tile=256, seed=1).tiles())


def test_a_slowly_written_file_is_handed_on_only_when_complete(tmp_path: Path, tiles) -> None:
    """A writer in another process writes a TIFF in 8 pieces over ~2 s; the source hands it
    on after the last byte, and the pixels read are the whole image."""
    staging = tmp_path / "staging"
    staging.mkdir()
    source_file = write_sem_tiff(staging / "tile.tif", tiles[0])
    folder = tmp_path / "in"
    folder.mkdir()
    target = folder / "tile.tif"
    # ends with the one file (a loaded machine may take seconds to start the writer's Python)
    source = WatchedFolderSource(folder, profile=FAST, poll_s=0.05, idle_stop_s=60, stop_after=1)
    frames: list[LiveFrame] = []
    reader = _collect(source, frames)
    writer = subprocess.run(
        [sys.executable, "-m", "tests._qc_ingest_child", "write", str(target),
         str(source_file), "8", "0.25"],
        cwd=REPO, env=_env(), check=True, timeout=60,
    )  # fmt: skip
    assert writer.returncode == 0
    written_ns = int((folder / "tile.tif.written").read_text())
    reader.join(timeout=30)
    assert len(frames) == 1
    frame = frames[0]
    assert frame.header.t_ready_ns >= written_ns  # never before the writer's last byte
    np.testing.assert_array_equal(frame.payload.load(), tiles[0].pixels)
    assert frame.header.shape == (256, 256) and frame.header.event["stage_known"]
    assert frame.header.stage.x == pytest.approx(tiles[0].stage_x_um, abs=1e-3)
    source.close()


def test_restart_after_kill_neither_skips_nor_repeats(tmp_path: Path) -> None:
    """A QC watcher is killed (SIGKILL) mid-run and started again: the ledger ends with one
    done record per file, every file, and the verdicts after the restart still judge."""
    folder = tmp_path / "in"
    folder.mkdir()
    sim = EMMosaicSimulator(rows=3, cols=5, tile=512, seed=2, faults={12: ("defocus",)})
    for tile in sim.tiles():
        write_sem_tiff(folder / tile.name, tile)
    cmd = [sys.executable, "-m", "tests._qc_ingest_child", "watch", str(folder), "0.4"]
    child = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
    seen = 0
    assert child.stdout is not None
    for line in child.stdout:
        seen += line.startswith("verdict")
        if seen >= 7:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    ledger = folder / ".scopeflow" / "ingest.jsonl"
    before = [json.loads(x) for x in ledger.read_text().splitlines() if x.strip()]
    done_before = {r["key"] for r in before if r["state"] == "done"}
    assert 1 <= len(done_before) < len(sim)
    restarted = subprocess.run(
        [sys.executable, "-m", "tests._qc_ingest_child", "watch", str(folder), "0"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    redone = {
        line.split()[1] for line in restarted.stdout.splitlines() if line.startswith("verdict")
    }
    assert not (redone & done_before)  # nothing done before the kill is judged again
    records = [json.loads(x) for x in ledger.read_text().splitlines() if x.strip()]
    done = [r["key"] for r in records if r["state"] == "done"]
    assert sorted(done) == sorted(t.name for t in sim.tiles())  # each once, none missing
    claimed = {r["key"]: r["index"] for r in records if r["state"] == "claimed"}
    assert sorted(claimed.values()) == list(range(len(sim)))
    final = {r["key"]: r["result"]["verdict"]["level"] for r in records if r["state"] == "done"}
    assert final[sim.render(12).name] == "fail"  # judged against the restored baseline
    assert list(final.values()).count("fail") == 1


def test_bad_files_become_verdicts_and_the_watcher_goes_on(tmp_path: Path, tiles) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_not_an_image.tif").write_text("this is a log file, not a TIFF\n")
    truncated = write_sem_tiff(tmp_path / "whole.tif", tiles[1])
    (folder / "b_truncated.tif").write_bytes(
        truncated.read_bytes()[: truncated.stat().st_size // 2]
    )
    write_sem_tiff(folder / "c_no_metadata.tif", tiles[2], vendor="none")
    (folder / "notes.txt").write_text("ignored: not an image pattern")
    workers = QCWorkers("threads", workers=1)
    source = WatchedFolderSource(folder, profile=FAST, poll_s=0.05, idle_stop_s=2.5)
    good_later = threading.Timer(1.0, lambda: write_sem_tiff(folder / "d_good.tif", tiles[3]))
    good_later.start()
    report = run_qc(source, Analyzer(workers, AnalyzerSettings()), QCJudge(QCConfig()))
    workers.close()
    verdicts = report.verdicts
    assert sorted(verdicts) == ["a_not_an_image.tif", "b_truncated.tif", "c_no_metadata.tif",
                                "d_good.tif"]  # fmt: skip
    for bad in ("a_not_an_image.tif", "b_truncated.tif"):
        v = verdicts[bad]
        assert v.level == "fail" and v.worst is not None and v.worst.metric == "readable"
        assert "truncated or corrupt" in (v.error or ""), v.error
    plain = verdicts["c_no_metadata.tif"]
    assert plain.error is None and not any(c.metric == "drift_px" for c in plain.checks)
    assert verdicts["d_good.tif"].error is None


def test_a_folder_that_disappears_and_comes_back(tmp_path: Path, tiles) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    write_sem_tiff(folder / "t0.tif", tiles[0])
    source = WatchedFolderSource(
        folder,
        profile=FAST,
        poll_s=0.05,
        idle_stop_s=30,
        stop_after=2,  # t0 and t1, however long the folder stays away on a loaded machine
        ledger=tmp_path / "ledger.jsonl",
    )
    frames: list[LiveFrame] = []
    reader = _collect(source, frames)
    _wait_for(lambda: len(frames) == 1)
    shutil.move(folder, tmp_path / "unmounted")
    _wait_for(lambda: source.missing_events == 1)
    shutil.move(tmp_path / "unmounted", folder)
    write_sem_tiff(folder / "t1.tif", tiles[1])
    reader.join(timeout=30)
    assert [f.header.tag for f in frames] == ["t0.tif", "t1.tif"]
    assert source.missing_events == 1


def test_sidecar_rule_waits_for_the_xml_and_reads_mrc(tmp_path: Path) -> None:
    folder = tmp_path / "epu"
    folder.mkdir()
    profile = VendorProfile(
        name="mrc", patterns=("*.mrc",), rule=CompletionRule(kind="sidecar", give_up_s=30)
    )
    data = (np.random.default_rng(0).random((128, 128)) * 200).astype(np.int16)
    with mrcfile.new(str(folder / "frame.mrc")) as mrc:
        mrc.set_data(data)
    source = WatchedFolderSource(folder, profile=profile, poll_s=0.05, idle_stop_s=1.5)
    frames: list[LiveFrame] = []
    reader = _collect(source, frames)
    time.sleep(0.6)
    assert frames == []  # no sidecar yet
    (folder / "frame.xml").write_text("<MicroscopeImage/>")
    reader.join(timeout=30)
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].payload.load(), data)


def test_tiff_being_written_is_not_complete(tmp_path: Path, tiles) -> None:
    from tasks.live import structure_complete

    whole = write_sem_tiff(tmp_path / "w.tif", tiles[0])
    data = whole.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) - 1000])
    assert structure_complete(whole, len(data)) is None
    assert structure_complete(cut, len(data) - 1000) is not None
    with tifffile.TiffFile(whole) as tif:
        assert tif.is_sem


def _wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_vendor_tags_give_stage_and_pixel_size(tmp_path: Path, tiles) -> None:
    from tasks.storage.convert import read_tile

    tile = tiles[4]
    for vendor, fmt in (("zeiss", "ZEISS SEM TIFF"), ("fei", "Thermo Fisher/FEI TIFF")):
        meta = read_tile(write_sem_tiff(tmp_path / f"{vendor}.tif", tile, vendor=vendor))
        assert meta.format_name == fmt
        assert meta.pixel_size_um == pytest.approx(tile.pixel_size_um)
        assert meta.stage_x_um == pytest.approx(tile.stage_x_um, abs=1e-3)
        assert meta.stage_y_um == pytest.approx(tile.stage_y_um, abs=1e-3)
    plain = read_tile(write_sem_tiff(tmp_path / "plain.tif", tile, vendor="none"))
    assert plain.stage_x_um is None and plain.pixel_size_um is None


def test_region_store_rewrites_a_repeated_tile_in_place(tmp_path: Path, tiles) -> None:
    """A restarted ingest that writes a tile again: same image, no duplicate."""
    import zarr

    from tasks.storage import TileSetWriter

    first = TileSetWriter(tmp_path)
    for t in tiles[:2]:
        first.add("r1", t.name, t.pixels, pixel_size_um=t.pixel_size_um,
                  stage_x_um=t.stage_x_um, stage_y_um=t.stage_y_um)  # fmt: skip
    again = TileSetWriter(tmp_path)  # a new process after a restart
    path = again.add("r1", tiles[1].name, tiles[1].pixels, pixel_size_um=tiles[1].pixel_size_um,
                     stage_x_um=tiles[1].stage_x_um, stage_y_um=tiles[1].stage_y_um)  # fmt: skip
    assert path.name == "1"
    path = again.add("r1", tiles[2].name, tiles[2].pixels, pixel_size_um=None,
                     stage_x_um=None, stage_y_um=None)  # fmt: skip
    assert path.name == "2"
    store = tmp_path / "r1.ome.zarr"
    series = zarr.open_group(str(store / "OME"), mode="r").attrs["ome"]["series"]
    assert series == ["0", "1", "2"]
    np.testing.assert_array_equal(zarr.open_group(str(store / "1"), mode="r")["0"][:],
                                  tiles[1].pixels)  # fmt: skip
