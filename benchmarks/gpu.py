"""GPU check and throughput: the shipped models on CUDA, in-process and on Ray/Dask GPU workers.

Usage (from the repo root, on a machine where torch sees a GPU)::

    python benchmarks/gpu.py [--seconds 2] [--batches 1 8] [--out PATH]

- correctness: the U-Net's class probabilities and labels, and CARE's output, on CUDA
  (float32 and bfloat16 autocast) against the same code on the CPU, on fresh simulated frames:
  relative L2 error and instance F1 (IoU >= 0.5) of the GPU labels against the CPU labels.
- throughput at 2048x2048: frames/s per batch size, network only (``predict_probabilities_batch``
  / ``restore_batch``) and the full segmentation (network + CPU post-processing). Baseline, same
  run: the same call on this machine's CPU (all cores), so each row has a GPU/CPU ratio.
- backends: ``make_backend`` with ``gpus_per_worker=1`` on a local Dask cluster (worker
  resource ``GPU``) and a local Ray cluster (actor ``num_gpus``): the worker reports its model's
  device and ``CUDA_VISIBLE_DEVICES``, and its labels must equal the in-process CUDA labels.

Prints a table and saves ``benchmarks/results/gpu.json`` with the machine description. Exits
non-zero when torch sees no GPU or a check fails. ``--device cpu`` is a smoke run of this
script's own code (float32 only, CPU workers) for machines without a GPU; its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.inference import (  # noqa: E402
    BackendConfig,
    instance_scores,
    load_model,
    load_restoration_model,
)
from tasks.inference import make_backend as make_inference_backend  # noqa: E402
from tasks.training import (  # noqa: E402
    sim_pair,
    simulated_frame,
)

RESULT = REPO / "benchmarks" / "results" / "gpu.json"
PIXEL_UM = 0.65  # 10x, 2048x2048 camera
MAX_REL_ERR_FP32 = 1e-3
MIN_LABEL_F1_FP32 = 0.99


def rel_l2(ref: np.ndarray, out: np.ndarray) -> float:
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    return float(np.linalg.norm(out64 - ref64) / max(np.linalg.norm(ref64), 1e-30))


def frames_2048(n: int) -> list[np.ndarray]:
    return [simulated_frame(seed=7000 + i, size=2048, nuclei_per_mm2=600.0).image for i in range(n)]


DEVICE = "cuda"


def precisions() -> tuple[str, ...]:
    return ("float32", "bfloat16") if DEVICE == "cuda" else ("float32",)


def correctness(seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    frames = [simulated_frame(seed=seed + i, size=1024) for i in range(3)]
    cpu = load_model("unet", device="cpu")
    reference = []
    for f in frames:
        p_cpu = cpu.predict_probabilities(f.image, pixel_size_um=f.pixel_size_um)
        reference.append((p_cpu, cpu.postprocess(p_cpu, f.pixel_size_um)))
    limits = {"float32": (MAX_REL_ERR_FP32, MIN_LABEL_F1_FP32), "bfloat16": (None, 0.95)}
    for precision in precisions():
        max_err, min_f1 = limits[precision]
        gpu = load_model("unet", device=DEVICE, precision=precision)
        errs, f1s = [], []
        for f, (p_cpu, lab_cpu) in zip(frames, reference, strict=True):
            p_gpu = gpu.predict_probabilities(f.image, pixel_size_um=f.pixel_size_um)
            errs.append(rel_l2(p_cpu, p_gpu))
            lab_gpu = gpu.postprocess(p_gpu, f.pixel_size_um)
            f1s.append(instance_scores(lab_cpu, lab_gpu).f1)
        ok = min(f1s) >= min_f1 and (max_err is None or max(errs) <= max_err)
        rows.append(
            {
                "model": "unet",
                "precision": precision,
                "max_rel_l2": max(errs),
                "min_label_f1_vs_cpu": min(f1s),
                "ok": ok,
            }
        )
    pairs = [sim_pair(seed + 10 + i, 768)[0] for i in range(3)]
    cpu_care = load_restoration_model("care", device="cpu")
    ref = cpu_care.restore_batch(pairs)
    care_limits = {"float32": MAX_REL_ERR_FP32, "bfloat16": 2e-2}
    for precision in precisions():
        max_err = care_limits[precision]
        gpu_care = load_restoration_model("care", device=DEVICE, precision=precision)
        errs = [rel_l2(r, o) for r, o in zip(ref, gpu_care.restore_batch(pairs), strict=True)]
        rows.append(
            {
                "model": "care",
                "precision": precision,
                "max_rel_l2": max(errs),
                "min_label_f1_vs_cpu": None,
                "ok": max(errs) <= max_err,
            }
        )
    return rows


def timed(
    call: Callable[[list[np.ndarray]], Any],
    frames: list[np.ndarray],
    batch: int,
    seconds: float,
    sync: Callable[[], None],
) -> dict[str, float]:
    """Median seconds per call over rotating batches (distinct frames), after a warm-up."""
    batches = [
        [frames[(i * batch + j) % len(frames)] for j in range(batch)]
        for i in range(max(1, len(frames) // batch))
    ]
    call(batches[0])
    sync()
    times: list[float] = []
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds or len(times) < 3:
        t0 = time.perf_counter()
        call(batches[i % len(batches)])
        sync()
        times.append(time.perf_counter() - t0)
        i += 1
    per_call = statistics.median(times)
    return {"frames_per_s": batch / per_call, "ms_per_frame": 1e3 * per_call / batch}


def throughput(batches: list[int], seconds: float) -> list[dict[str, Any]]:
    import torch

    frames = frames_2048(max(batches))

    def sync() -> None:
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def cases(device: str, precision: str) -> dict[str, Callable[[list[np.ndarray]], Any]]:
        unet = load_model("unet", device=device, precision=precision)
        care = load_restoration_model("care", device=device, precision=precision)
        return {
            "unet network": lambda b: unet.predict_probabilities_batch(b, pixel_size_um=PIXEL_UM),
            "unet segment": lambda b: unet.segment_batch(b, pixel_size_um=PIXEL_UM),
            "care restore": lambda b: care.restore_batch(b),
        }

    cpu_cases = cases("cpu", "float32")
    cpu_rate = {
        name: timed(call, frames, 1, seconds, lambda: None)["frames_per_s"]
        for name, call in cpu_cases.items()
    }
    rows = []
    for precision in precisions():
        for name, call in cases(DEVICE, precision).items():
            # segment = network + post-processing on the CPU, which batching cannot speed up
            for batch in batches if name != "unet segment" else batches[:1]:
                r = timed(call, frames, batch, seconds, sync)
                rows.append(
                    {
                        "case": name,
                        "precision": precision,
                        "batch": batch,
                        "size": 2048,
                        **{k: round(v, 3) for k, v in r.items()},
                        "cpu_frames_per_s": round(cpu_rate[name], 3),
                        "gpu_over_cpu": round(r["frames_per_s"] / cpu_rate[name], 1),
                    }
                )
                print(
                    f"{name:13s} {precision:9s} batch {batch:3d}: "
                    f"{r['frames_per_s']:8.1f} frames/s (CPU {cpu_rate[name]:.2f})",
                    flush=True,
                )
    return rows


def backend_check(kind: str) -> dict[str, Any]:
    """A GPU worker of ``kind`` must load the U-Net on CUDA and match in-process labels."""
    frames = [simulated_frame(seed=8100 + i, size=1024) for i in range(2)]
    px = frames[0].pixel_size_um
    local = load_model("unet", device=DEVICE)
    expected = local.segment_batch([f.image for f in frames], pixel_size_um=px)
    gpus = 1 if DEVICE == "cuda" else 0
    config = BackendConfig(kind=kind, workers=1, gpus_per_worker=gpus, model="unet")
    try:
        with make_inference_backend(config) as backend:
            labels = backend.segment([f.image for f in frames], pixel_size_um=px)
            info = backend.info()
    except ImportError as exc:
        return {"backend": kind, "ok": None, "skipped": f"{exc}"}
    workers = info["per_worker"]
    devices = sorted({str(w.get("device")) for w in workers})
    same = all(np.array_equal(a, b) for a, b in zip(expected, labels, strict=True))
    return {
        "backend": kind,
        "devices": devices,
        "cuda_visible_devices": sorted({str(w.get("cuda_visible_devices")) for w in workers}),
        "labels_equal_in_process": same,
        "ok": same and all(d.startswith(DEVICE) for d in devices),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per row")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--backends", nargs="*", default=["dask", "ray"])
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    import torch

    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        print("--device cpu: a smoke run of this script; the numbers mean nothing", flush=True)
        props = None
    elif not torch.cuda.is_available():
        print("torch sees no CUDA device here; run this on a GPU machine", file=sys.stderr)
        return 2
    else:
        props = torch.cuda.get_device_properties(0)
    gpu = {
        "name": props.name if props else "none (cpu smoke run)",
        "memory_gib": round(props.total_memory / 2**30, 1) if props else None,
        "multiprocessors": props.multi_processor_count if props else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    print(json.dumps(gpu), flush=True)
    results: dict[str, Any] = {"gpu": gpu, "seed": args.seed}
    results["correctness"] = correctness(args.seed)
    for row in results["correctness"]:
        print(json.dumps(row), flush=True)
    results["throughput"] = throughput(args.batches, args.seconds)
    results["backends"] = []
    for kind in args.backends:
        try:
            results["backends"].append(backend_check(kind))
        except Exception as exc:
            traceback.print_exc()
            results["backends"].append({"backend": kind, "ok": False, "error": repr(exc)})
        print(json.dumps(results["backends"][-1]), flush=True)
    results["machine"] = describe_machine(torch=torch.__version__)
    results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'case':14s} {'precision':9s} {'batch':>5s} {'frames/s':>9s} {'x CPU':>6s}")
    for r in results["throughput"]:
        print(
            f"{r['case']:14s} {r['precision']:9s} {r['batch']:5d} "
            f"{r['frames_per_s']:9.1f} {r['gpu_over_cpu']:6.1f}"
        )
    failed = [r for r in results["correctness"] + results["backends"] if r.get("ok") is False]
    print(f"wrote {args.out}; {len(failed)} failed checks")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
