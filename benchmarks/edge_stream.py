"""Edge frame stream: frames/s and frame-ready -> client latency, with floors from the same run.

Rows, for each camera size:
- render:      the simulator alone (core.snapImage + getImage), in process
- in-process:  a pymmcore-plus MDA run with a frameReady callback, in process (floor 1)
- disk write:  raw sequential write of the same bytes, one file per frame (floor 2)
- shm / tcp / ws stream: the edge agent as a process, journal on, frames received by a client
  process through the shared-memory ring, the TCP stream, or the WebSocket

Throughput is measured back to back (N frames as fast as they come); latency (frame ready at the
edge -> received by the client, split into journal and transport) with frames paced at 10/s, so
it shows the cost of the path, not queueing. The in-process callback receives a frame at the
moment it is ready, so a stream's latency is what it adds.

Goals (2048x2048): stream frames/s >= 0.8 x min(in-process, disk write); latency p50 < 5 ms.

    python benchmarks/edge_stream.py [--frames 200] [--sizes 512 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import useq
from _machine import describe_machine

from tasks.hardware import EdgeClient, EdgeProcess
from tasks.hardware.sim import SimulatorConfig, build_simulated_core

RESULTS = Path(__file__).parent / "results" / "edge_stream.json"


def bench_render(size: int, n: int) -> dict:
    core, _ = build_simulated_core(SimulatorConfig(width=size, height=size))
    core.setConfig("Channel", "DAPI")
    core.setXYPosition(5_000, 5_000)
    core.snapImage()
    core.getImage()
    t0 = time.perf_counter()
    for _ in range(n):
        core.snapImage()
        core.getImage()
    fps = n / (time.perf_counter() - t0)
    core.unloadAllDevices()  # before interpreter shutdown, which would abort in its destructor
    return {"fps": fps}


def bench_in_process(size: int, n: int) -> dict:
    core, _ = build_simulated_core(SimulatorConfig(width=size, height=size))
    core.setXYPosition(5_000, 5_000)
    stamps: list[float] = []
    core.mda.events.frameReady.connect(lambda img, event, meta: stamps.append(time.perf_counter()))
    events = [useq.MDAEvent(channel="DAPI", exposure=1.0)] * n
    core.mda.run(events[:5])  # warm caches like the edge's first frames
    stamps.clear()
    t0 = time.perf_counter()
    core.mda.run(events)
    core.unloadAllDevices()
    return {"fps": n / (stamps[-1] - t0)}


def bench_disk(size: int, n: int, directory: Path) -> dict:
    frame = np.random.default_rng(0).integers(0, 4000, (size, size), dtype=np.uint16)
    t0 = time.perf_counter()
    for i in range(n):
        with open(directory / f"raw-{i}.bin", "wb") as handle:
            handle.write(memoryview(frame).cast("B"))
    elapsed = time.perf_counter() - t0
    for i in range(n):
        (directory / f"raw-{i}.bin").unlink()
    return {"fps": n / elapsed, "mb_s": n * frame.nbytes / elapsed / 1e6}


def bench_stream(size: int, n: int, directory: Path, transport: str, prewrite: int = 2) -> dict:
    """Back-to-back throughput, then paced latency, through one edge process."""
    os.environ["SCOPEFLOW_EDGE__JOURNAL_PREWRITE"] = str(prewrite)
    folder = directory / f"edge-{transport}-{size}-{prewrite}"
    with EdgeProcess(folder, extra_args=["--camera-size", str(size)]) as edge:
        client = EdgeClient(edge.url, token_file=edge.token_file)
        client.move_stage(x=5_000, y=5_000)
        client.submit_events([useq.MDAEvent(channel="DAPI", exposure=1.0)] * 5)
        list(client.frames(0, stop=5, transport=transport))  # warm up caches and the stream
        t0 = time.time_ns()
        client.submit_events([useq.MDAEvent(channel="DAPI", exposure=1.0)] * n)
        last = t0
        for _ in client.frames(5, stop=5 + n, transport=transport):
            last = time.time_ns()
        fps = n / ((last - t0) / 1e9)
        paced = [
            useq.MDAEvent(
                channel="DAPI", exposure=1.0, min_start_time=i * 0.1, reset_event_timer=i == 0
            )
            for i in range(min(n, 50))
        ]
        client.submit_events(paced)
        latency, journal = [], []
        start = 5 + n
        for frame in client.frames(start, stop=start + len(paced), transport=transport):
            received = time.time_ns()
            latency.append((received - frame.header.t_ready_ns) / 1e6)
            journal.append((frame.header.t_journaled_ns - frame.header.t_ready_ns) / 1e6)
        client.close()
    transport_ms = np.array(latency) - np.array(journal)
    return {
        "fps": fps,
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p99_ms": float(np.percentile(latency, 99)),
        "journal_p50_ms": float(np.percentile(journal, 50)),
        "transport_p50_ms": float(np.percentile(transport_ms, 50)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; medians kept")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    args = parser.parse_args()
    results: dict = {
        "machine": describe_machine(),
        "frames": args.frames,
        "rounds": args.rounds,
        "note": "ratio_to_floor is taken within each round (same minute), then the median",
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        directory = Path(tmp)
        for size in args.sizes:
            rounds = [
                _round(size, args.frames, directory / f"{size}-r{r}") for r in range(args.rounds)
            ]
            rows = {name: _median_row([r[name] for r in rounds]) for name in rounds[0]}
            results["sizes"][str(size)] = {"median": rows, "rounds": rounds}
            _print(size, rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"saved {RESULTS}")


def _round(size: int, n: int, directory: Path) -> dict[str, dict]:
    directory.mkdir(parents=True)
    rows = {
        "render": bench_render(size, n),
        "in-process": bench_in_process(size, n),
        "disk write": bench_disk(size, n, directory),
        "shm stream": bench_stream(size, n, directory, "shm"),
        "shm no-prew": bench_stream(size, n, directory, "shm", prewrite=0),
        "tcp stream": bench_stream(size, n, directory, "tcp"),
        "ws stream": bench_stream(size, n, directory, "websocket"),
    }
    floor = min(rows["in-process"]["fps"], rows["disk write"]["fps"])
    for row in rows.values():
        row["ratio_to_floor"] = row["fps"] / floor
    return rows


def _median_row(rows: list[dict]) -> dict:
    return {key: float(np.median([row[key] for row in rows])) for key in rows[0]}


def _print(size: int, rows: dict) -> None:
    print(f"\n{size}x{size} uint16 ({size * size * 2 / 2**20:.1f} MiB/frame)")
    columns = ("latency_p50_ms", "latency_p99_ms", "journal_p50_ms", "transport_p50_ms")
    print(
        f"{'path':<12} {'frames/s':>9} {'/floor':>7}" + "".join(f" {c[:-3]:>16}" for c in columns)
    )
    for name, row in rows.items():
        cells = "".join(f" {row[c]:>16.2f}" if c in row else f" {'-':>16}" for c in columns)
        print(f"{name:<12} {row['fps']:>9.1f} {row['ratio_to_floor']:>7.2f}{cells}")


if __name__ == "__main__":
    main()
