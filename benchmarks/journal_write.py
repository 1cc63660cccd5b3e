"""Append throughput of FrameJournal vs. a raw sequential write of the same bytes.

Usage (from the repo root)::

    python benchmarks/journal_write.py [--frames 100] [--size 2048] [--repeats 3] [--dir DIR]

For each repeat it writes N frames as raw files (one ``open/write/close`` per frame, in the
same parent folder as the journals) and into a journal per compression (none/zstd/lz4), in
interleaved blocks of ``--block`` frames with a rotating order, with no fsync inside the timed
part of either. Prints a table and saves
``benchmarks/results/journal_write.json`` with a machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.storage import FrameJournal  # noqa: E402

MODES = ("raw", "none", "zstd", "lz4")


def make_frames(size: int, distinct: int = 8) -> list[np.ndarray]:
    """Microscopy-like uint16 frames: smooth blobs on a background plus shot noise."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frames = []
    for _ in range(distinct):
        img = np.full((size, size), 100.0, dtype=np.float32)
        for cy, cx, r in rng.uniform(0.05, 0.95, (20, 3)):
            img += 2000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r * 0.05) ** 2))
        frames.append(rng.poisson(img).astype(np.uint16))
    return frames


class RawWriter:
    """The baseline: one open/write/close per frame, raw bytes, in its own folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder
        self.n = 0

    def append(self, pixels: np.ndarray, meta: dict, *, pixel_size_um: float) -> int:
        with open(self.folder / f"frame_{self.n:06d}.bin", "wb") as f:
            f.write(memoryview(pixels).cast("B"))
        self.n += 1
        return self.n - 1

    def close(self) -> None:
        pass


def writer(mode: str, folder: Path) -> RawWriter | FrameJournal:
    if mode == "raw":
        return RawWriter(folder)
    return FrameJournal.create(folder, compression=mode)  # type: ignore[arg-type]


def timed_block(w: RawWriter | FrameJournal, frames: list[np.ndarray], start: int, n: int) -> float:
    meta = {"event": {"index": {"t": 0, "p": 0}, "x_pos": 1.0, "y_pos": 2.0}, "exposure_ms": 10.0}
    t0 = time.perf_counter()
    for i in range(start, start + n):
        w.append(frames[i % len(frames)], {**meta, "i": i}, pixel_size_um=0.65)
    return time.perf_counter() - t0


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def machine() -> dict[str, object]:
    import zarr

    return describe_machine(zarr=zarr.__version__)


def filesystem(path: Path) -> str:
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best = max((m for m in mounts if str(path.resolve()).startswith(m[1])), key=lambda m: len(m[1]))
    return f"{best[2]} on {best[1]} ({best[0]})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=10, help="frames per interleaved block")
    ap.add_argument("--dir", type=Path, default=None, help="parent folder (default: system temp)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/journal_write.json")
    args = ap.parse_args()

    frames = make_frames(args.size)
    frame_bytes = frames[0].nbytes
    total = frame_bytes * args.frames
    work = Path(tempfile.mkdtemp(prefix="journal_write_", dir=args.dir))
    times: dict[str, list[float]] = {m: [] for m in MODES}
    stored: dict[str, int] = {}
    try:
        for rep in range(args.repeats):
            writers = {m: writer(m, work / f"{m}_{rep}") for m in MODES}
            spent = dict.fromkeys(MODES, 0.0)
            # interleave blocks of frames so that drift of the machine hits every mode alike
            for b, start in enumerate(range(0, args.frames, args.block)):
                n = min(args.block, args.frames - start)
                k = (rep + b) % len(MODES)
                for mode in MODES[k:] + MODES[:k]:
                    os.sync()  # no dirty pages from the previous block (outside the timing)
                    spent[mode] += timed_block(writers[mode], frames, start, n)
            for mode, w in writers.items():
                w.close()  # the journal's flush (fsync) is outside the timing, like raw's
                times[mode].append(spent[mode])
                stored[mode] = disk_bytes(work / f"{mode}_{rep}")
                shutil.rmtree(work / f"{mode}_{rep}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw_med = statistics.median(times["raw"])
    rows = []
    for mode in MODES:
        med = statistics.median(times[mode])
        ratios = [r / t for r, t in zip(times["raw"], times[mode], strict=True)]
        rows.append(
            {
                "mode": mode,
                "seconds": times[mode],
                "median_s": med,
                "MB_per_s": total / med / 1e6,
                "frames_per_s": args.frames / med,
                "ms_per_frame": med / args.frames * 1e3,
                "throughput_vs_raw_median": raw_med / med,
                "throughput_vs_raw_per_repeat": ratios,
                "bytes_on_disk": stored[mode],
                "compression_ratio": total / stored[mode] if stored[mode] else None,
            }
        )
    print(
        f"{args.frames} frames of {args.size}x{args.size} uint16 ({frame_bytes / 2**20:.1f} MiB), "
        f"{args.repeats} repeats, in {filesystem(work)}"
    )
    print(f"{'mode':<6} {'MB/s':>9} {'frames/s':>9} {'ms/frame':>9} {'vs raw':>7} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['mode']:<6} {r['MB_per_s']:9.0f} {r['frames_per_s']:9.1f} "
            f"{r['ms_per_frame']:9.2f} {r['throughput_vs_raw_median']:7.2f} "
            f"{r['compression_ratio']:6.2f}"
        )
    result = {
        "benchmark": "journal_write",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "frames": args.frames,
        "frame_shape": [args.size, args.size],
        "dtype": "uint16",
        "repeats": args.repeats,
        "filesystem": filesystem(work),
        "machine": machine(),
        "block": args.block,
        "note": "no fsync inside the timed loop for either; raw = one open/write/close per frame "
        "in the same parent folder; modes interleaved in blocks; vs raw = raw median time / "
        "mode median time",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
