"""Closed loop: frame ready at the edge -> segmentation -> decision -> stage command applied.

Four loops with the same work per frame (model, measure the objects, move the stage to the
brightest one), measured in the same run:
- raw:       in-process pymmcore-plus frameReady -> model -> core.setXYPosition (the floor)
- scopeflow: edge agent process -> shared-memory stream -> Ray actor, handed a reference to
             the frame's slot in the edge's ring (it reads the pixels itself; model +
             measurements, objects sent back) -> decision -> command over the edge's open
             command channel
- naive:     one Prefect task run per frame (pixels as task parameters), command via the client,
             on Prefect's default task runner (threads in the flow's process)
- naive_ray: the same on prefect-ray's RayTaskRunner: per-frame tasks on Ray workers
Prefect's local server is started before any frame is acquired, so no frame waits for it.

scopeflow's latency is split into transport (ready -> received), inference (received ->
objects back; of which model = the model's own time on the worker), decision, and command
(sent -> the edge's answer: the move is done when it answers). "added beyond model" is, per
frame, total minus the model's own time (p50 over frames), for raw and scopeflow alike.
Goals: scopeflow adds < 10 ms p50 beyond the model's own time; scopeflow / raw <= 1.25;
naive / scopeflow >= 5. Needs the `bench` extra (prefect-ray).

    python benchmarks/closed_loop.py [--frames 30] [--sizes 512 2048] [--model classical]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import useq
from _machine import describe_machine

from tasks.hardware import EdgeClient, EdgeProcess
from tasks.hardware.sim import SimulatorConfig, build_simulated_core
from tasks.inference import (
    BackendConfig,
    ObjectTable,
    SegmentationModel,
    load_model,
    make_backend,
    measure_objects,
)

RESULTS = Path(__file__).parent / "results" / "closed_loop.json"
CENTRE = (5_000.0, 5_000.0)
MIN_PACE_S = 0.4  # frames come at least this far apart, and 1.5x the model's time: the loop
# is measured, not a backlog (the in-process floor blocks acquisition while it works)


def decide(objects: ObjectTable, x: float, y: float, px: float) -> tuple[float, float]:
    """Target: the brightest object's centroid (stage µm), or stay."""
    if len(objects) == 0:
        return x, y
    best = int(np.argmax(objects.mean_intensity))
    h, w = objects.shape
    nx = x + (objects.centroid_col[best] - (w - 1) / 2) * px
    ny = y + (objects.centroid_row[best] - (h - 1) / 2) * px
    return float(np.clip(nx, CENTRE[0] - 200, CENTRE[0] + 200)), float(
        np.clip(ny, CENTRE[1] - 200, CENTRE[1] + 200)
    )


def loop_raw(size: int, n: int, model: ModelChoice, pace_s: float) -> dict:
    core, _ = build_simulated_core(SimulatorConfig(width=size, height=size))
    segmenter = model.load()
    core.setXYPosition(*CENTRE)
    totals, model_ms, added = [], [], []
    events = [
        useq.MDAEvent(channel="DAPI", exposure=5.0, min_start_time=i * pace_s) for i in range(n)
    ]

    def on_frame(img: np.ndarray, event: useq.MDAEvent, meta: dict) -> None:
        t0 = time.perf_counter()
        x, y = core.getXYPosition()
        px = core.getPixelSizeUm()
        labels = segmenter.segment(img, pixel_size_um=px)
        t1 = time.perf_counter()
        core.setXYPosition(*decide(measure_objects(labels, img), x, y, px))
        core.waitForDevice(core.getXYStageDevice())
        totals.append((time.perf_counter() - t0) * 1e3)
        model_ms.append((t1 - t0) * 1e3)
        added.append(totals[-1] - model_ms[-1])

    core.mda.events.frameReady.connect(on_frame)
    core.mda.run(events)
    core.unloadAllDevices()
    return _stats(totals, model=model_ms, added_beyond_model=added)


def loop_scopeflow(size: int, n: int, model: ModelChoice, directory: Path, pace_s: float) -> dict:
    with EdgeProcess(directory / f"edge-{size}", extra_args=["--camera-size", str(size)]) as edge:
        client = EdgeClient(edge.url, token_file=edge.token_file)
        commands = client.command_channel()
        backend = make_backend(model.backend_config())
        try:
            backend.submit(warm_up_frame(size), pixel_size_um=0.65).result()  # imports, caches
            client.move_stage(*CENTRE)
            start = client.state().frames_journaled
            events = [
                useq.MDAEvent(
                    channel="DAPI",
                    exposure=5.0,
                    min_start_time=i * pace_s,
                    reset_event_timer=i == 0,
                )
                for i in range(n)
            ]
            client.submit_events(events)
            rows: dict[str, list[float]] = {
                k: [] for k in ("transport", "inference", "model", "decision", "command", "total")
            }
            for frame in client.frames(start, stop=start + n, transport="shm"):
                received = time.time_ns()
                h = frame.header
                pixels = client.shm_ref(frame) or frame.pixels  # the worker reads the ring
                objects = backend.submit(
                    pixels, pixel_size_um=h.pixel_size_um, objects=True
                ).result()
                inferred = time.time_ns()
                target = decide(objects, h.stage.x, h.stage.y, h.pixel_size_um)
                decided = time.time_ns()
                commands.move_stage(*target)
                applied = time.time_ns()
                rows["transport"].append((received - h.t_ready_ns) / 1e6)
                rows["inference"].append((inferred - received) / 1e6)
                rows["model"].append(objects.model_ms)
                rows["decision"].append((decided - inferred) / 1e6)
                rows["command"].append((applied - decided) / 1e6)
                rows["total"].append((applied - h.t_ready_ns) / 1e6)
        finally:
            backend.close()
            commands.close()
            client.close()
    total = rows.pop("total")
    added = [t - m for t, m in zip(total, rows["model"], strict=True)]
    return _stats(total, **rows, added_beyond_model=added)


def loop_naive(
    size: int, n: int, model: ModelChoice, directory: Path, pace_s: float, runner: str
) -> dict:
    """``runner``: "local" (Prefect's default thread pool) or "ray" (prefect-ray's
    RayTaskRunner on a local Ray cluster: how a naive user sends per-frame tasks to workers)."""
    import contextlib

    from prefect import flow, task

    @task
    def segment(pixels: np.ndarray, px: float) -> np.ndarray:
        return model.load().segment(pixels, pixel_size_um=px)

    @task
    def move(url: str, token_file: str, x: float, y: float) -> None:
        with EdgeClient(url, token_file=Path(token_file)) as c:
            c.move_stage(x, y)

    totals: list[float] = []

    task_runner = None
    cluster: contextlib.AbstractContextManager = contextlib.nullcontext()
    if runner == "ray":
        from prefect_ray import RayTaskRunner

        task_runner = RayTaskRunner()  # reuses the Ray session started below (127.0.0.1 only)
        cluster = make_backend(model.backend_config())

    @flow(task_runner=task_runner) if task_runner else flow
    def naive(url: str, token_file: str, start: int) -> None:
        with EdgeClient(url, token_file=Path(token_file)) as client:
            for frame in client.frames(start, stop=start + n, transport="shm"):
                h = frame.header
                labels = segment.submit(frame.pixels, h.pixel_size_um).result()
                objects = measure_objects(labels, frame.pixels)
                target = decide(objects, h.stage.x, h.stage.y, h.pixel_size_um)
                move(url, token_file, *target)
                totals.append((time.time_ns() - h.t_ready_ns) / 1e6)

    @flow(task_runner=task_runner) if task_runner else flow
    def warm_up() -> None:
        """Prefect's first flow in a process starts its local server (~24 s here), and the
        first task on a Ray worker imports Prefect there: do both before any frame exists,
        so no frame waits for them."""
        segment.submit(warm_up_frame(size), 0.65).result()

    with (
        cluster,
        EdgeProcess(
            directory / f"naive-{runner}-{size}", extra_args=["--camera-size", str(size)]
        ) as edge,
    ):
        warm_up()
        client = EdgeClient(edge.url, token_file=edge.token_file)
        client.move_stage(*CENTRE)
        start = client.state().frames_journaled
        events = [
            useq.MDAEvent(
                channel="DAPI", exposure=5.0, min_start_time=i * pace_s, reset_event_timer=i == 0
            )
            for i in range(n)
        ]
        client.submit_events(events)
        naive(edge.url, str(edge.token_file), start)
        client.close()
    return _stats(totals)


@dataclass(frozen=True)
class ModelChoice:
    """The model every loop uses, with its options (e.g. ``working_radius_px``)."""

    name: str
    options: dict[str, Any]

    def load(self) -> SegmentationModel:
        return load_model(self.name, **self.options)

    def backend_config(self) -> BackendConfig:
        return BackendConfig(kind="ray", workers=1, model=self.name, model_options=self.options)


def warm_up_frame(size: int) -> np.ndarray:
    """A frame with one bright square, so that a model's first call does its one-off work."""
    frame = np.full((size, size), 100, np.uint16)
    frame[size // 4 : size // 2, size // 4 : size // 2] = 1000
    return frame


def _stats(total: list[float], **parts: list[float]) -> dict:
    out = {
        "p50_ms": float(np.percentile(total, 50)),
        "p99_ms": float(np.percentile(total, 99)),
        "n": len(total),
    }
    for name, values in parts.items():
        out[f"{name}_p50_ms"] = float(np.percentile(values, 50))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--model", default="classical")
    parser.add_argument(
        "--working-radius-px",
        type=float,
        default=4.0,
        help="classical model: bin frames whose nuclei are larger than this (0: full resolution)",
    )
    args = parser.parse_args()
    options = {"working_radius_px": args.working_radius_px or None}
    model = ModelChoice(args.model, options if args.model == "classical" else {})
    results: dict = {
        "machine": describe_machine(),
        "model": args.model,
        "model_options": model.options,
        "frames": args.frames,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for size in args.sizes:
            probe = loop_raw(size, 3, model, MIN_PACE_S)
            pace = max(MIN_PACE_S, 1.5 * probe["model_p50_ms"] / 1000)
            rows = {
                "raw": loop_raw(size, args.frames, model, pace),
                "scopeflow": loop_scopeflow(size, args.frames, model, Path(tmp), pace),
                "naive": loop_naive(size, args.frames, model, Path(tmp), pace, "local"),
                "naive_ray": loop_naive(size, args.frames, model, Path(tmp), pace, "ray"),
                "pace_s": pace,
            }
            raw, sf, naive = rows["raw"], rows["scopeflow"], rows["naive"]
            naive_ray = rows["naive_ray"]
            rows["ratios"] = {
                "scopeflow_over_raw": sf["p50_ms"] / raw["p50_ms"],
                "naive_over_scopeflow": naive["p50_ms"] / sf["p50_ms"],
                "naive_ray_over_scopeflow": naive_ray["p50_ms"] / sf["p50_ms"],
                "added_beyond_model_ms": sf["added_beyond_model_p50_ms"],
                "raw_added_beyond_model_ms": raw["added_beyond_model_p50_ms"],
            }
            results["sizes"][str(size)] = rows
            _print(size, rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"saved {RESULTS}")


def _print(size: int, rows: dict) -> None:
    print(f"\n{size}x{size}: frame ready -> command applied (ms)")
    keys = ("p50_ms", "p99_ms", "transport_p50_ms", "inference_p50_ms", "model_p50_ms",
            "decision_p50_ms", "command_p50_ms", "added_beyond_model_p50_ms")  # fmt: skip
    print(f"{'loop':<10}" + "".join(f" {k.removesuffix('_ms')[:14]:>14}" for k in keys))
    for name in ("raw", "scopeflow", "naive", "naive_ray"):
        row = rows[name]
        print(
            f"{name:<10}"
            + "".join(f" {row[k]:>14.2f}" if k in row else f" {'-':>14}" for k in keys)
        )
    print("ratios:", {k: round(v, 2) for k, v in rows["ratios"].items()})


if __name__ == "__main__":
    main()
