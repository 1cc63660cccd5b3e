"""Edge frame stream: frames/s and frame-ready -> client latency, against floors measured in the same run.

Rows, for each camera size:
- render:       the simulator alone (core.snapImage + getImage), in process
- in-process:   a pymmcore-plus MDA run with a frameReady callback, in process (floor 1)
- disk write:   raw sequential write of the same bytes, one file per frame (floor 2)
- tcp stream:   the edge agent as a process, journal on, frames received over the TCP stream
- ws stream:    the same over the WebSocket

Goal (2048x2048): tcp stream >= 0.8 x min(in-process, disk write) frames/s, and under 5 ms of
latency added per frame on loopback (p50 of frame-ready -> received by the client).

    python benchmarks/edge_stream.py [--frames 200] [--sizes 512 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import useq

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
    return {"fps": n / (time.perf_counter() - t0)}


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


def bench_stream(size: int, n: int, directory: Path, transport: str) -> dict:
    with EdgeProcess(directory / f"edge-{transport}-{size}", extra_args=["--camera-size", str(size)]) as edge:
        client = EdgeClient(edge.url, token_file=edge.token_file)
        client.move_stage(x=5_000, y=5_000)
        client.submit_events([useq.MDAEvent(channel="DAPI", exposure=1.0)] * 5)
        list(client.frames(0, stop=5, transport=transport))  # warm up
        latencies, journal_ms = [], []
        t0 = time.time_ns()
        client.submit_events([useq.MDAEvent(channel="DAPI", exposure=1.0)] * n)
        last = t0
        for frame in client.frames(5, stop=5 + n, transport=transport):
            last = time.time_ns()
            latencies.append((last - frame.header.t_ready_ns) / 1e6)
            journal_ms.append((frame.header.t_journaled_ns - frame.header.t_ready_ns) / 1e6)
        client.close()
    return {
        "fps": n / ((last - t0) / 1e9),
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p99_ms": float(np.percentile(latencies, 99)),
        "journal_p50_ms": float(np.percentile(journal_ms, 50)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    args = parser.parse_args()
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "frames": args.frames,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        directory = Path(tmp)
        for size in args.sizes:
            n = args.frames
            rows = {
                "render": bench_render(size, n),
                "in-process": bench_in_process(size, n),
                "disk write": bench_disk(size, n, directory),
                "tcp stream": bench_stream(size, n, directory, "tcp"),
                "ws stream": bench_stream(size, n, directory, "websocket"),
            }
            floor = min(rows["in-process"]["fps"], rows["disk write"]["fps"])
            for row in rows.values():
                row["ratio_to_floor"] = row["fps"] / floor
            results["sizes"][str(size)] = rows
            _print(size, rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"saved {RESULTS}")


def _print(size: int, rows: dict) -> None:
    print(f"\n{size}x{size} uint16 ({size * size * 2 / 2**20:.1f} MiB/frame)")
    print(f"{'path':<12} {'frames/s':>9} {'/floor':>7} {'lat p50':>8} {'lat p99':>8} {'journal':>8}")
    for name, row in rows.items():
        lat50 = f"{row['latency_p50_ms']:.2f}" if "latency_p50_ms" in row else "-"
        lat99 = f"{row['latency_p99_ms']:.2f}" if "latency_p99_ms" in row else "-"
        jour = f"{row['journal_p50_ms']:.2f}" if "journal_p50_ms" in row else "-"
        print(f"{name:<12} {row['fps']:>9.1f} {row['ratio_to_floor']:>7.2f} {lat50:>8} {lat99:>8} {jour:>8}")


if __name__ == "__main__":
    main()
