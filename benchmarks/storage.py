"""Conversion and streaming-write throughput of scopeflow's OME-Zarr writer.

Usage (from the repo root)::

    python benchmarks/storage.py [--frames 100] [--repeats 3] [--stream-repeats 7]
        [--large-gb 0] [--dir DIR] [--zarr2-python /tmp/zarr2venv/bin/python] [--only-stream]

1. Converting the real CZI files (``../shared/data/czi``): MB of pixels per second.
2. Converting a large synthetic tiled OME-TIFF (``--large-gb``; default RAM/4 + 10 %), in a child
   process whose peak resident memory is recorded (it must stay far below the file size).
3. Streaming 2048x2048 uint16 frames into OME-Zarr with scopeflow's two writers -- the edge
   agent's ``FrameJournal`` and the converter's ``ImageWriter`` -- against raw writes of the same
   bytes (one big file, and one file per frame like a zarr store), and against pymmcore-plus's
   ``OMEZarrWriter`` (zarr v2, run with ``--zarr2-python``) and ``TensorStoreHandler`` (zarr v3)
   with the same compression; all in the same rounds, interleaved (``_stream_cases.py``).

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
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import _stream_cases as cases  # noqa: E402

from tasks.storage.convert import convert_file  # noqa: E402

CZI_DIR = REPO.parent / "shared" / "data" / "czi"
ZARR2_PYTHON = Path("/tmp/zarr2venv/bin/python")


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


STREAM_CASES = (
    "raw_one_file",
    "raw_file_per_frame",
    "journal_none",
    "image_none",
    "pmm_tensorstore_none",
    "pmm_omezarr_none",
    "journal_zstd",
    "image_zstd",
    "pmm_tensorstore_zstd",
    "pmm_omezarr_zstd",
)
# (ours, reference): throughput ratios, each from times measured in the same round
STREAM_RATIOS = (
    ("journal_none", "raw_one_file"),
    ("journal_none", "raw_file_per_frame"),
    ("image_none", "raw_one_file"),
    ("image_none", "raw_file_per_frame"),
    ("journal_none", "pmm_omezarr_none"),
    ("image_none", "pmm_omezarr_none"),
    ("journal_none", "pmm_tensorstore_none"),
    ("image_none", "pmm_tensorstore_none"),
    ("journal_zstd", "pmm_omezarr_zstd"),
    ("image_zstd", "pmm_omezarr_zstd"),
    ("journal_zstd", "pmm_tensorstore_zstd"),
    ("image_zstd", "pmm_tensorstore_zstd"),
)


def stream_case(name: str, data: list[np.ndarray], count: int, npy: Path, zarr2: Path) -> Any:
    kind, _, compression = name.rpartition("_")
    if name == "raw_one_file":
        return lambda d: cases.raw_one_file(d, data, count)
    if name == "raw_file_per_frame":
        return lambda d: cases.raw_file_per_frame(d, data, count)
    if kind == "journal":
        return lambda d: cases.scopeflow_journal(d, data, count, compression)
    if kind == "image":
        return lambda d: cases.scopeflow_image(d, data, count, compression)
    if kind == "pmm_tensorstore":
        return lambda d: cases.pymmcore_tensorstore(d, data, count, compression)
    if kind == "pmm_omezarr":
        if not zarr2.is_file():
            raise FileNotFoundError(
                f"no python at {zarr2} for OMEZarrWriter (needs zarr<3); create it with: python3 "
                f"-m venv {zarr2.parents[1]} && {zarr2.parent}/pip install pymmcore-plus==0.18.1 "
                "'zarr<3' numpy"
            )
        return lambda d: cases.pymmcore_omezarr(d, npy, count, compression, zarr2)
    raise ValueError(f"unknown streaming case {name!r}")


def bench_stream(root: Path, count: int, repeats: int, zarr2: Path) -> dict[str, Any]:
    """Every case once per round, rounds interleaved with a rotating order; sync before each."""
    data = cases.frames(count)
    npy = root / "frames.npy"
    np.save(npy, np.stack(data))
    mb = count * cases.FRAME * cases.FRAME * 2 / 1e6
    wall: dict[str, list[float]] = {name: [] for name in STREAM_CASES}
    cpu: dict[str, list[float]] = {name: [] for name in STREAM_CASES}
    errors: dict[str, str] = {}
    for r in range(repeats):
        k = r % len(STREAM_CASES)
        for name in STREAM_CASES[k:] + STREAM_CASES[:k]:
            if name in errors:
                continue
            folder = root / f"stream_{name}_{r}"
            os.sync()  # no write-back of the previous case during this one (outside the timing)
            try:
                seconds, cpu_s = stream_case(name, data, count, npy, zarr2)(folder)
            except Exception as exc:  # record why a writer cannot run here, keep the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            wall[name].append(seconds)
            cpu[name].append(cpu_s)
    ran = {name: v for name, v in wall.items() if len(v) == repeats}
    ratios: dict[str, dict[str, Any]] = {}
    for ours, ref in STREAM_RATIOS:
        if ours in ran and ref in ran:
            per_round = [b / a for a, b in zip(ran[ours], ran[ref], strict=True)]
            ratios[f"{ours}_vs_{ref}"] = {
                "median_of_rounds": statistics.median(per_round),
                "rounds": per_round,
                "cpu_s_ratio": statistics.median(cpu[ours]) / statistics.median(cpu[ref]),
            }
    return {
        "frames": count,
        "mb": mb,
        "note": "throughput = MB / wall seconds for the whole acquisition (create, every frame, "
        "finish); no fsync inside any timed part; os.sync() before each case; cases in a "
        "rotating order per round; ratio = ours / reference throughput within one round, "
        "median over rounds; cpu_s_ratio = median CPU seconds of ours / reference",
        "mb_s": {name: [mb / s for s in v] for name, v in ran.items()},
        "median_mb_s": {name: mb / statistics.median(v) for name, v in ran.items()},
        "median_cpu_s": {name: statistics.median(cpu[name]) for name in ran},
        "ratios": ratios,
        "errors": errors,
    }


def print_stream(stream: dict[str, Any]) -> None:
    mb = stream["mb"]
    print(f"\nstreaming {stream['frames']} frames of 2048x2048 uint16 ({mb:.0f} MB)")
    print(f"  {'case':24s} {'MB/s':>8s} {'CPU s':>7s}  (medians)")
    for name, value in stream["median_mb_s"].items():
        print(f"  {name:24s} {value:8.1f} {stream['median_cpu_s'][name]:7.2f}")
    for name, why in stream["errors"].items():
        print(f"  {name:24s} could not run: {why}")
    print(f"  {'ratio (same rounds)':46s} {'median':>6s} {'CPU s':>6s}")
    for name, r in stream["ratios"].items():
        print(f"  {name:46s} {r['median_of_rounds']:6.2f} {r['cpu_s_ratio']:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the CZI conversions")
    parser.add_argument("--stream-repeats", type=int, default=7, help="rounds of streaming")
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    parser.add_argument("--large-gb", type=float, default=round(memory / 4 * 1.1 / 1e9, 1))
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--zarr2-python", type=Path, default=ZARR2_PYTHON)
    parser.add_argument("--only-stream", action="store_true", help="skip the conversions")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/storage.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scopeflow-storage-", dir=args.dir))
    czi: list[dict[str, Any]] = []
    large = None
    try:
        if not args.only_stream:
            (root / "czi").mkdir()
            czi = bench_czi(root / "czi", args.repeats)
        stream = bench_stream(root, args.frames, args.stream_repeats, args.zarr2_python)
        if args.large_gb > 0 and not args.only_stream:
            large = bench_large(root, args.large_gb)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if czi:
        print(f"{'CZI file':45s} {'MB':>8s} {'MB/s (median)':>14s}")
    for row in czi:
        print(f"{row['file']:45s} {row['mb']:8.2f} {statistics.median(row['mb_s']):14.1f}")
    print_stream(stream)
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
            tensorstore=metadata.version("tensorstore"),
            zarr2_python=f"{args.zarr2_python}: {zarr2_versions(args.zarr2_python)}",
            filesystem=filesystem(root),
        ),
        "czi_conversion": czi,
        "streaming": stream,
        "large_file": large,
        "goals": {"ours_none_vs_raw": 0.9, "ours_vs_pymmcore_same_compression": 1.0},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nsaved {args.out}")


def zarr2_versions(python: Path) -> str:
    code = "import zarr, numcodecs, pymmcore_plus as p; print(zarr.__version__, p.__version__)"
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    except OSError as exc:
        return f"not available ({exc})"
    zarr_v, pmm_v = [*done.stdout.split(), "?", "?"][:2]
    return f"zarr {zarr_v}, pymmcore-plus {pmm_v}" if done.returncode == 0 else "not available"


def filesystem(path: Path) -> str:
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    path = path.resolve()
    best = max(
        (m for m in mounts if path.is_relative_to(m[1])), key=lambda m: len(m[1]), default=None
    )
    return "unknown" if best is None else f"{best[2]} on {best[1]} ({best[0]})"


if __name__ == "__main__":
    main()
