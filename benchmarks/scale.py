"""Batch-flow scaling: orchestration overhead per tile, 1 -> 2 worker speedup, GPU throughput.

Usage (from the repo root)::

    python benchmarks/scale.py [--tiles 1000 10000] [--real-tiles 48] [--engines dask ray]

- overhead: ``tasks.compute`` runners (the ones the batch flows use) run a trivial model
  (all-zero labels) on in-memory 64x64 tiles, grouped as the flows group them
  (``group_items``), on one worker. Baseline, same run: the same worker function over all
  tiles in this process. Overhead per tile = (orchestrated wall - baseline wall) / tiles.
  ``per_task`` rows send one tile per engine call (no grouping) for comparison.
- speedup: the classical model (Otsu + watershed) on 512x512 tiles, 1 worker vs 2 workers.
- gpu: the U-Net and CARE on 2048x2048 frames per batch size when torch sees a GPU (the
  same rows as ``benchmarks/gpu.py``, which also checks CUDA against the CPU and GPU workers).

Prints a table and saves ``benchmarks/results/scale.json`` with the machine description.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scopeflow import LocalComputeProfile  # noqa: E402
from tasks.compute import group_items, open_runner  # noqa: E402
from tasks.compute.synthetic_workload import TILE_SEEDS, run_model_on  # noqa: E402

TRIVIAL = "tasks.compute.synthetic_workload:ZerosModel"


def orchestrated(engine: str, workers: int, spec: str, size: int, n: int, grouped: bool) -> float:
    with open_runner(LocalComputeProfile(engine=engine, workers=workers)) as runner:
        fn = partial(run_model_on, spec, size)
        # warm every worker: model loaded, the 8 synthetic tiles made (not part of the timing)
        runner.run_on_workers(partial(fn, list(range(len(TILE_SEEDS)))))
        items = list(range(n))
        groups = group_items(items, workers) if grouped else [[i] for i in items]
        started = time.perf_counter()
        outcome = runner.map(fn, groups)
        wall = time.perf_counter() - started
    assert not outcome.failures, outcome.failures[:1]
    return wall


def baseline(spec: str, size: int, n: int) -> float:
    run_model_on(spec, size, list(range(len(TILE_SEEDS))))
    started = time.perf_counter()
    run_model_on(spec, size, list(range(n)))
    return time.perf_counter() - started


def gpu_rows() -> list[dict]:
    """The U-Net and CARE at 2048x2048 per batch size (``benchmarks/gpu.py``'s throughput)."""
    import torch

    if not torch.cuda.is_available():
        return []
    from gpu import throughput

    return throughput([1, 8], seconds=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--per-task-tiles", type=int, default=1000)
    parser.add_argument("--real-tiles", type=int, default=48)
    parser.add_argument("--engines", nargs="+", default=["dask", "ray"])
    args = parser.parse_args()

    results: dict = {"overhead": [], "speedup": [], "gpu": []}
    print(f"{'engine':6} {'mode':8} {'tiles':>6} {'wall s':>8} {'base s':>8} {'ms/tile':>8}")
    for engine in args.engines:
        runs = [(n, True) for n in args.tiles] + [(args.per_task_tiles, False)]
        for n, grouped in runs:
            base = baseline(TRIVIAL, 64, n)
            wall = orchestrated(engine, 1, TRIVIAL, 64, n, grouped)
            per_tile_ms = (wall - base) / n * 1e3
            mode = "grouped" if grouped else "per_task"
            results["overhead"].append(
                {
                    "engine": engine,
                    "mode": mode,
                    "tiles": n,
                    "wall_s": round(wall, 3),
                    "baseline_s": round(base, 3),
                    "overhead_ms_per_tile": round(per_tile_ms, 3),
                }
            )
            print(f"{engine:6} {mode:8} {n:6d} {wall:8.2f} {base:8.2f} {per_tile_ms:8.3f}")
    print(f"\n{'engine':6} {'tiles':>6} {'1 worker s':>10} {'2 workers s':>11} {'speedup':>8}")
    for engine in args.engines:
        one = orchestrated(engine, 1, "classical", 512, args.real_tiles, True)
        two = orchestrated(engine, 2, "classical", 512, args.real_tiles, True)
        results["speedup"].append(
            {
                "engine": engine,
                "model": "classical",
                "tile": 512,
                "tiles": args.real_tiles,
                "one_worker_s": round(one, 3),
                "two_workers_s": round(two, 3),
                "speedup": round(one / two, 3),
            }
        )
        print(f"{engine:6} {args.real_tiles:6d} {one:10.2f} {two:11.2f} {one / two:8.2f}")
    results["gpu"] = gpu_rows() or (
        "no GPU visible to torch on this machine; last GPU run: benchmarks/results/gpu.json"
    )

    import dask
    import distributed
    import ray
    import torch

    record = {
        "benchmark": "scale",
        "when": datetime.now(UTC).isoformat(),
        "machine": describe_machine(
            ray=ray.__version__,
            dask=dask.__version__,
            distributed=distributed.__version__,
            torch=torch.__version__,
        ),
        "goals": {"overhead_ms_per_tile": "< 5, flat 1k -> 10k", "speedup_1_to_2": ">= 1.7"},
        "results": results,
    }
    out = REPO / "benchmarks" / "results" / "scale.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
