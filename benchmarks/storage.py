"""Conversion and streaming-write throughput of scopeflow's OME-Zarr writer.

Usage (from the repo root)::

    python benchmarks/storage.py [--frames 100] [--repeats 3] [--large-gb 0] [--dir DIR]

1. Converting the real CZI files (``../shared/data/czi``): MB of pixels per second.
2. Converting a large synthetic tiled OME-TIFF (``--large-gb``; default RAM/4 + 10 %), in a child
   process whose peak resident memory is recorded (it must stay far below the file size).
3. Streaming 2048x2048 uint16 frames into OME-Zarr with :class:`ImageWriter` against a raw
   sequential write of the same bytes (same run, same disk), and against pymmcore-plus's
   ``OMEZarrWriter`` with the same compression.

Prints a table and saves ``benchmarks/results/storage.json`` with a machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.storage.convert import (  # noqa: E402
    ChannelInfo,
    ImageWriter,
    SceneInfo,
    convert_file,
)

CZI_DIR = REPO.parent / "shared" / "data" / "czi"
FRAME = 2048


def frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.poisson(500.0, (FRAME, FRAME)).astype(np.uint16)
    return [base + np.uint16(i % 7) for i in range(min(count, 8))]


def bench_czi(root: Path, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for source in sorted(CZI_DIR.glob("*.czi")):
        runs = []
        for r in range(repeats):
            result = convert_file(source, root / f"{source.stem}.{r}.ome.zarr")
            runs.append(result.pixel_bytes / 1e6 / result.seconds)
        rows.append({"file": source.name, "mb": result.pixel_bytes / 1e6, "mb_s": runs})
    return rows


def write_large_tiff(path: Path, gigabytes: float) -> tuple[int, ...]:
    import tifffile

    plane = 8192
    planes = max(1, int(gigabytes * 1e9 / (plane * plane * 2)))
    rng = np.random.default_rng(1)
    tile = rng.poisson(300.0, (1024, 1024)).astype(np.uint16)

    def gen() -> Any:  # tifffile takes a tiled image as an iterator of tiles, row by row
        for z in range(planes):
            for i in range((plane // 1024) ** 2):
                yield tile + np.uint16((z + i) % 1000)

    tifffile.imwrite(
        path,
        gen(),
        shape=(planes, plane, plane),
        dtype=np.uint16,
        tile=(1024, 1024),
        bigtiff=True,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1},
    )
    return (planes, plane, plane)


CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from tasks.storage.convert import ConvertOptions, convert_file
r = convert_file(Path(sys.argv[1]), Path(sys.argv[2]), ConvertOptions(compression="none"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"pixel_bytes": r.pixel_bytes, "seconds": r.seconds, "peak_rss": peak}))
"""


def bench_large(root: Path, gigabytes: float) -> dict[str, Any]:
    source = root / "large.ome.tif"
    started = time.perf_counter()
    shape = write_large_tiff(source, gigabytes)
    written = time.perf_counter() - started
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), str(root / "large.ome.zarr"), str(REPO)],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "shape_zyx": list(shape),
        "file_bytes": source.stat().st_size,
        "write_source_s": written,
        "convert_s": out["seconds"],
        "mb_s": out["pixel_bytes"] / 1e6 / out["seconds"],
        "peak_rss_bytes": out["peak_rss"],
    }


def stream_raw(folder: Path, data: list[np.ndarray], count: int) -> float:
    folder.mkdir()
    started = time.perf_counter()
    with open(folder / "frames.bin", "wb") as f:
        for i in range(count):
            f.write(memoryview(data[i % len(data)]).cast("B"))
    return time.perf_counter() - started


def stream_scopeflow(folder: Path, data: list[np.ndarray], count: int, compression: str) -> float:
    scene = SceneInfo(
        name="stream",
        shape=(count, 1, 1, FRAME, FRAME),
        dtype=np.dtype(np.uint16),
        channels=(ChannelInfo("camera"),),
    )
    started = time.perf_counter()
    writer = ImageWriter(
        folder / "s.ome.zarr",
        scene,
        compression=compression,
        max_levels=1,  # type: ignore[arg-type]
        chunks=(FRAME, FRAME),
    )
    whole = slice(0, FRAME)
    for i in range(count):
        writer.write(i, 0, slice(0, 1), whole, whole, data[i % len(data)][None])
    writer.finish()
    return time.perf_counter() - started


def stream_pymmcore(folder: Path, data: list[np.ndarray], count: int, compression: str) -> float:
    import useq
    from pymmcore_plus.mda.handlers import OMEZarrWriter

    kwargs: dict[str, Any] = {}
    if compression == "none":
        kwargs["compressors"] = None
    else:
        from zarr.codecs import ZstdCodec

        kwargs["compressors"] = ZstdCodec(level=1, checksum=False)
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": count})
    started = time.perf_counter()
    writer = OMEZarrWriter(str(folder / "p.ome.zarr"), array_kwargs=kwargs)  # type: ignore[arg-type]
    writer.sequenceStarted(seq, {})  # type: ignore[arg-type]
    for event in seq:
        writer.frameReady(data[event.index["t"] % len(data)], event, {})  # type: ignore[arg-type]
    writer.sequenceFinished(seq)
    return time.perf_counter() - started


def bench_stream(root: Path, count: int, repeats: int) -> dict[str, Any]:
    data = frames(count)
    mb = count * FRAME * FRAME * 2 / 1e6
    runs: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    for r in range(repeats):
        cases = {
            "raw": lambda d: stream_raw(d, data, count),
            "scopeflow_none": lambda d: stream_scopeflow(d, data, count, "none"),
            "pymmcore_none": lambda d: stream_pymmcore(d, data, count, "none"),
            "scopeflow_zstd": lambda d: stream_scopeflow(d, data, count, "zstd"),
            "pymmcore_zstd": lambda d: stream_pymmcore(d, data, count, "zstd"),
        }
        for name, case in cases.items():
            if name in errors:
                continue
            folder = root / f"stream_{name}_{r}"
            folder.mkdir(exist_ok=True)
            try:
                seconds = case(folder / "x")
            except Exception as exc:  # record why a writer cannot run here, keep the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            runs.setdefault(name, []).append(mb / seconds)
    return {"frames": count, "mb": mb, "mb_s": runs, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    parser.add_argument("--large-gb", type=float, default=round(memory / 4 * 1.1 / 1e9, 1))
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scopeflow-storage-", dir=args.dir))
    try:
        (root / "czi").mkdir()
        czi = bench_czi(root / "czi", args.repeats)
        stream = bench_stream(root, args.frames, args.repeats)
        large = bench_large(root, args.large_gb) if args.large_gb > 0 else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in stream["mb_s"].items()}
    ratios = {
        "scopeflow_none_vs_raw": med.get("scopeflow_none", 0) / med["raw"],
        "scopeflow_none_vs_pymmcore_none": (
            med["scopeflow_none"] / med["pymmcore_none"] if "pymmcore_none" in med else None
        ),
        "scopeflow_zstd_vs_pymmcore_zstd": (
            med["scopeflow_zstd"] / med["pymmcore_zstd"] if "pymmcore_zstd" in med else None
        ),
    }
    print(f"{'CZI file':45s} {'MB':>8s} {'MB/s (median)':>14s}")
    for row in czi:
        print(f"{row['file']:45s} {row['mb']:8.2f} {statistics.median(row['mb_s']):14.1f}")
    print(
        f"\nstreaming {stream['frames']} frames of {FRAME}x{FRAME} uint16 ({stream['mb']:.0f} MB)"
    )
    for name, value in med.items():
        print(f"  {name:20s} {value:8.1f} MB/s")
    for name, why in stream["errors"].items():
        print(f"  {name:20s} could not run: {why}")
    for name, value in ratios.items():
        print(f"  {name:34s} {'n/a' if value is None else f'{value:.2f}'}")
    if large:
        print(
            f"\nlarge synthetic OME-TIFF {large['file_bytes'] / 1e9:.2f} GB: "
            f"{large['mb_s']:.1f} MB/s, peak RSS {large['peak_rss_bytes'] / 1e6:.0f} MB"
        )
    import pymmcore_plus
    import tifffile
    import zarr

    result = {
        "benchmark": "storage",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(
            zarr=zarr.__version__,
            tifffile=tifffile.__version__,
            pymmcore_plus=pymmcore_plus.__version__,
        ),
        "czi_conversion": czi,
        "streaming": {**stream, "median_mb_s": med, "ratios": ratios},
        "large_file": large,
        "goals": {"scopeflow_none_vs_raw": 0.9, "scopeflow_vs_pymmcore_same_compression": 1.0},
    }
    out = REPO / "benchmarks" / "results" / "storage.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
