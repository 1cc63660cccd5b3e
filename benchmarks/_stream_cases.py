"""The writers compared by ``benchmarks/storage.py``'s streaming part, one function per case.

Every case writes the same ``count`` 2048x2048 uint16 frames (cycling through the same 8 arrays)
into a folder that does not exist yet and returns ``(wall_s, cpu_s)`` for the whole acquisition:
creating the store, every frame, and finishing its metadata. No case fsyncs inside the timed part
(the journal's ``close`` fsyncs, so it is called after the clock stops; TensorStore runs with
``file_io_sync: false``); the caller runs ``os.sync()`` before each case so no case pays for the
write-back of the one before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tasks.storage import FrameJournal  # noqa: E402
from tasks.storage.convert import ChannelInfo, ImageWriter, SceneInfo  # noqa: E402

FRAME = 2048
CHILD = Path(__file__).with_name("_pmm_zarr2_child.py")
Case = Callable[[Path], tuple[float, float]]


def frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.poisson(500.0, (FRAME, FRAME)).astype(np.uint16)
    return [base + np.uint16(i % 7) for i in range(min(count, 8))]


class _Clock:
    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    @property
    def result(self) -> tuple[float, float]:
        return self.wall, self.cpu


def raw_one_file(folder: Path, data: list[np.ndarray], count: int) -> tuple[float, float]:
    """All frames appended to one file (the issue's "raw sequential write")."""
    folder.mkdir()
    with _Clock() as clock, open(folder / "frames.bin", "wb") as f:
        for i in range(count):
            f.write(memoryview(data[i % len(data)]).cast("B"))
    return clock.result


def raw_file_per_frame(folder: Path, data: list[np.ndarray], count: int) -> tuple[float, float]:
    """One new file per frame, all in one folder: the same number of files as a zarr store."""
    folder.mkdir()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with _Clock() as clock:
        for i in range(count):
            fd = os.open(os.path.join(folder, str(i)), flags, 0o644)
            try:
                os.write(fd, memoryview(data[i % len(data)]).cast("B"))
            finally:
                os.close(fd)
    return clock.result


def scopeflow_journal(
    folder: Path, data: list[np.ndarray], count: int, compression: str
) -> tuple[float, float]:
    """The edge agent's write path: ``FrameJournal.append`` (NGFF 0.5 store + metadata log)."""
    with _Clock() as clock:
        journal = FrameJournal.create(folder, compression=compression)  # type: ignore[arg-type]
        for i in range(count):
            journal.append(data[i % len(data)], {"t": i})
    journal.close()  # fsyncs: outside the timing, like every other case
    return clock.result


def scopeflow_image(
    folder: Path, data: list[np.ndarray], count: int, compression: str
) -> tuple[float, float]:
    """The converter's writer (``ImageWriter``), one 5D image, one chunk per frame, no pyramid."""
    scene = SceneInfo(
        name="stream",
        shape=(count, 1, 1, FRAME, FRAME),
        dtype=np.dtype(np.uint16),
        channels=(ChannelInfo("camera"),),
    )
    whole = slice(0, FRAME)
    with _Clock() as clock:
        writer = ImageWriter(
            folder / "s.ome.zarr",
            scene,
            compression=compression,  # type: ignore[arg-type]
            max_levels=1,
            chunks=(FRAME, FRAME),
        )
        for i in range(count):
            writer.write(i, 0, slice(0, 1), whole, whole, data[i % len(data)][None])
        writer.finish()
    return clock.result


def pymmcore_tensorstore(
    folder: Path, data: list[np.ndarray], count: int, compression: str
) -> tuple[float, float]:
    """pymmcore-plus's ``TensorStoreHandler`` (zarr v3 driver, chunks of one frame)."""
    import useq
    from pymmcore_plus.mda.handlers import TensorStoreHandler

    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if compression == "zstd":
        codecs.append({"name": "zstd", "configuration": {"level": 1, "checksum": False}})
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": count})
    events = list(seq)
    with _Clock() as clock:
        handler = TensorStoreHandler(
            driver="zarr3",
            path=folder / "p.zarr",
            spec={"context": {"file_io_sync": False}, "metadata": {"codecs": codecs}},
        )
        handler.sequenceStarted(seq, {})  # type: ignore[arg-type]
        for event in events:
            handler.frameReady(data[event.index["t"] % len(data)], event, {})  # type: ignore[arg-type]
        handler.sequenceFinished(seq)
    return clock.result


def pymmcore_omezarr(
    folder: Path, npy: Path, count: int, compression: str, python: Path
) -> tuple[float, float]:
    """pymmcore-plus's ``OMEZarrWriter`` (NGFF 0.4, zarr v2) in a venv with ``zarr<3``.

    The child loads the same frames from ``npy`` and times the same span as the other cases.
    """
    done = subprocess.run(
        [str(python), str(CHILD), str(npy), str(folder), str(count), compression],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} {CHILD.name} failed: {done.stderr.strip()[-600:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return float(out["wall_s"]), float(out["cpu_s"])
