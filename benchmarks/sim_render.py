"""Frame rate of the simulated microscope: direct render and core.snapImage() + getImage().

Run:  python benchmarks/sim_render.py [--seconds 1.0] [--out benchmarks/results/sim_render.json]

For each camera size, channel and objective it reports frames/s (median of 5 timed runs,
after a warm-up that fills the sprite and noise caches) for
  render  Simulation.render() at a fixed stage position
  snap    core.snapImage(); core.getImage() at a fixed stage position
  scan    snap while the stage steps one field of view per frame (new cells every frame)
The machine may be shared: the median and the best of 5 runs are both recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.hardware.sim import SimulatorConfig, build_simulated_core  # noqa: E402

SIZES = (512, 2048)
CHANNELS = ("DAPI", "BF")
OBJECTIVES = ("10x", "40x")


def _rate(step, seconds: float, repeats: int = 5) -> tuple[float, float]:
    """Frames per second (wall clock) over ``repeats`` runs: (median, best)."""
    rates = []
    for _ in range(repeats):
        n = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds / repeats or n < 3:
            step()
            n += 1
        rates.append(n / elapsed)
    return statistics.median(rates), max(rates)


def bench(size: int, channel: str, objective: str, seconds: float) -> dict[str, float]:
    core, sim = build_simulated_core(SimulatorConfig(width=size, height=size))
    core.setConfig("Channel", channel)
    core.setConfig("Objective", objective)
    core.setXYPosition(5000.0, 5000.0)

    def snap() -> np.ndarray:
        core.snapImage()
        return core.getImage()

    for _ in range(20):
        sim.render()
        snap()
    render_fps, render_best = _rate(sim.render, seconds)
    snap_fps, snap_best = _rate(snap, seconds)

    fov = size * core.getPixelSizeUm()
    tiles = [(1000.0 + i * fov, 1000.0 + j * fov) for j in range(6) for i in range(6)]
    k = 0

    def scan() -> None:
        nonlocal k
        core.setXYPosition(*tiles[k % len(tiles)])
        k += 1
        snap()

    for _ in range(len(tiles)):  # first pass over the tiles fills the sprite cache
        scan()
    scan_fps, scan_best = _rate(scan, seconds)
    return {
        "render_fps": render_fps,
        "snap_fps": snap_fps,
        "scan_fps": scan_fps,
        "render_fps_best": render_best,
        "snap_fps_best": snap_best,
        "scan_fps_best": scan_best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per cell")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "sim_render.json"
    )
    args = parser.parse_args()

    rows = []
    print(
        f"{'size':>6} {'channel':>7} {'obj':>4} {'render':>9} {'snap':>9} {'scan':>9}"
        f"  | best: {'render':>7} {'snap':>7} {'scan':>7}   (frames/s, median | best run)"
    )
    for size in SIZES:
        for channel in CHANNELS:
            for objective in OBJECTIVES:
                r = bench(size, channel, objective, args.seconds)
                rows.append({"size": size, "channel": channel, "objective": objective, **r})
                print(
                    f"{size:>6} {channel:>7} {objective:>4} {r['render_fps']:>9.1f} "
                    f"{r['snap_fps']:>9.1f} {r['scan_fps']:>9.1f}  |       "
                    f"{r['render_fps_best']:>7.1f} {r['snap_fps_best']:>7.1f} "
                    f"{r['scan_fps_best']:>7.1f}",
                    flush=True,
                )
    result = {
        "benchmark": "sim_render",
        "unit": "frames/s",
        "config": "SimulatorConfig defaults (time_scale=1: the sample moves in real time)",
        "machine": describe_machine(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
