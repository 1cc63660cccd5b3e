"""Round-trip latency of one frame through the inference backends, with a trivial model.

Usage (from the repo root)::

    python benchmarks/inference_roundtrip.py [--sizes 512 2048] [--iters 200] [--warmup 20]

The model (``tasks.compute.synthetic_workload:ZerosModel``) returns an all-zero int32 label image,
so the numbers are the transport + dispatch cost. One round trip = ``submit`` + ``result``,
sequential, one worker. Modes:

- ``in_process``: ``model.segment(frame)`` in this process (the baseline of the same run);
- ``ray_sent``: the frame passed to a Ray actor call; ``ray_preput``: an ObjectRef from
  ``backend.put`` (put once, outside the timing);
- ``dask_sent``: the frame passed to ``client.submit``; ``dask_scatter_each``: scatter +
  submit per frame (both timed); ``dask_prescattered``: a Future from ``backend.put``.

Prints a table (p50/p99 in ms, ratio of p50 to the in-process p50) and saves
``benchmarks/results/inference_roundtrip.json`` with a machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
MODEL = "tasks.compute.synthetic_workload:ZerosModel"


def machine() -> dict[str, object]:
    import dask
    import distributed
    import ray

    return describe_machine(
        ray=ray.__version__, dask=dask.__version__, distributed=distributed.__version__
    )


def timed(fn: Callable[[], object], iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
    }


def run_backend(kind: str, frames: dict[int, np.ndarray], iters: int, warmup: int) -> dict:
    from tasks.inference import BackendConfig, make_backend

    started = time.perf_counter()
    backend = make_backend(BackendConfig(kind=kind, workers=1, model=MODEL))
    startup = time.perf_counter() - started
    results: dict[str, dict[int, list[float]]] = {}
    try:
        for size, frame in frames.items():
            ref = backend.put(frame)
            backend.submit(ref).result()
            modes: dict[str, Callable[[], object]] = {
                f"{kind}_sent": lambda f=frame: backend.submit(f).result(),
                ("ray_preput" if kind == "ray" else "dask_prescattered"): lambda r=ref: (
                    backend.submit(r).result()
                ),
            }
            if kind == "dask":
                modes["dask_scatter_each"] = lambda f=frame: backend.submit(backend.put(f)).result()
            n = iters if size <= 1024 else max(20, iters // 2)
            for mode, fn in modes.items():
                results.setdefault(mode, {})[size] = timed(fn, n, warmup)
            del ref
    finally:
        backend.close()
    return {"startup_s": startup, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/inference_roundtrip.json"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from tasks.compute.synthetic_workload import ZerosModel

    load_before = [round(x, 2) for x in os.getloadavg()]
    rng = np.random.default_rng(0)
    frames = {s: rng.integers(0, 4096, (s, s), dtype=np.uint16) for s in args.sizes}
    model = ZerosModel()
    raw: dict[str, dict[int, list[float]]] = {"in_process": {}}
    for size, frame in frames.items():
        raw["in_process"][size] = timed(lambda f=frame: model.segment(f), args.iters, args.warmup)
    startup = {}
    for kind in ("ray", "dask"):
        out = run_backend(kind, frames, args.iters, args.warmup)
        startup[kind] = out["startup_s"]
        raw.update(out["results"])

    rows = []
    print(f"{'mode':<20}{'size':>6}{'MiB':>6}{'p50 ms':>10}{'p99 ms':>10}{'x in-proc':>11}")
    for mode, per_size in raw.items():
        for size, secs in per_size.items():
            s = summary(secs)
            base = summary(raw["in_process"][size])["p50_ms"]
            row = {
                "mode": mode,
                "size": size,
                "frame_mib": frames[size].nbytes / 2**20,
                "n": len(secs),
                **s,
                "vs_in_process_p50": s["p50_ms"] / base if base > 0 else None,
            }
            rows.append(row)
            print(
                f"{mode:<20}{size:>6}{row['frame_mib']:>6.1f}{s['p50_ms']:>10.2f}"
                f"{s['p99_ms']:>10.2f}{row['vs_in_process_p50']:>10.1f}x"
            )
    print(
        f"startup (cluster + 1 worker + model): ray {startup['ray']:.1f} s, "
        f"dask {startup['dask']:.1f} s"
    )
    report = {
        "benchmark": "inference_roundtrip",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": MODEL,
        "dtype": "uint16",
        "workers": 1,
        "iters": args.iters,
        "warmup": args.warmup,
        "machine": machine(),
        "startup_s": startup,
        "load_average_at_start": load_before,
        "note": (
            "sequential submit+result round trips, one worker, local clusters on 127.0.0.1; "
            "dask_sent scatters frames >= 1 MiB before submit (the backend's submit does); "
            "the 2-core machine was shared with other jobs (see load averages), so p99s and "
            "the 2048 numbers are noisy; "
            "labels are int32 zeros of the frame's shape (2x the frame's bytes) and come back "
            "in every round trip; vs_in_process_p50 = mode p50 / in-process p50 of the same run"
        ),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
