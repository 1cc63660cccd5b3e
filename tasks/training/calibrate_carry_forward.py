"""Calibrate carry-forward's threshold (and its ``max_predicted_run``) on simulated time-lapses.

    python -m tasks.training.calibrate_carry_forward [--seeds 10 11] [--positions 4]

Renders brightfield and DAPI time-lapses at random positions of simulator slides (seeds kept
apart from the figures' seeds 0-2), in two settings: the demo's (2 simulated minutes between
time points) and a long one (10 minutes, cells moving and dividing). The virtual stain segments
every brightfield frame and the classical model every DAPI frame, as in the flow; then the pure
``UncertaintyTriggeredPolicy`` itself runs over each time-lapse for every candidate (threshold,
max_predicted_run), and its run is scored as the flow's is (detection F1 against the ground
truth, pooled: acquired frames as segmented, predicted ones by the stand-in the policy logged).
The choice: the candidate with the fewest acquisitions whose F1 is at most ``margin`` x
``tolerance`` below acquiring every frame in both settings (half the goal's 1-point tolerance
kept for runs unlike these), ties to the larger threshold.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from scopeflow import ObjectTable
from tasks.decisions import FrameView, UncertaintyRules, UncertaintyTriggeredPolicy
from tasks.inference import (
    analyse_frame,
    detection_scores,
    detection_scores_at,
    load_model,
    pool_scores,
)

__all__ = ["SETTINGS", "calibrate", "main", "replay", "static_f1", "timelapses"]

SETTINGS = {"demo": (8, 120.0), "long": (16, 600.0)}  # time points, simulated s between them
THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
MAX_RUNS = (2, 3, 5, None)
TOLERANCE, MARGIN = 0.01, 0.5
_SIZE = 512


@dataclass
class _Frame:
    model: ObjectTable  # virtual stain on brightfield
    real: ObjectTable  # classical on DAPI
    truth: np.ndarray
    ignore: np.ndarray
    real_labels: np.ndarray


def timelapses(seed: int, positions: int, time_points: int, step_s: float) -> list[list[_Frame]]:
    """Per position, per time point: the analysed frames and the truth."""
    from tasks.hardware.sim import SimulatorConfig, build_simulated_core, truth_labels

    cfg = SimulatorConfig(seed=seed, width=_SIZE, height=_SIZE)
    _core, sim = build_simulated_core(cfg)
    stain, classical = load_model("virtual-stain"), load_model("classical")
    rng = np.random.default_rng([seed, 5309])
    px = cfg.pixel_size_um("20x")
    start = float(rng.uniform(0.0, 3600.0 * 10))
    out = []
    for _ in range(positions):
        x, y = rng.uniform(2_000.0, 8_000.0, 2)
        frames = []
        for t in range(time_points):
            base = replace(
                sim.state(),
                x_um=float(x),
                y_um=float(y),
                z_um=cfg.focal_plane_z_um,
                objective="20x",
                illuminated=True,
                binning=1,
                t_s=start + t * step_s,
            )
            bf = replace(base, channel="BF", exposure_ms=10.0)
            dapi = replace(base, channel="DAPI", exposure_ms=50.0)
            truth, ignore, _ids = truth_labels(sim, dapi)
            real_px = sim.renderer.render(dapi)[0].copy()
            real_labels = np.asarray(classical.segment(real_px, pixel_size_um=px))
            frames.append(
                _Frame(
                    analyse_frame(stain, sim.renderer.render(bf)[0].copy(), pixel_size_um=px),
                    analyse_frame(classical, real_px, pixel_size_um=px),
                    truth,
                    ignore,
                    real_labels,
                )
            )
        out.append(frames)
    return out


def _view(p: int, t: int, c: int, px: float) -> FrameView:
    return FrameView(
        index=0,
        command_id=None,
        stage_x_um=0.0,
        stage_y_um=0.0,
        stage_z_um=0.0,
        width=_SIZE,
        height=_SIZE,
        pixel_size_um=px,
        affine=(px, 0.0, 0.0, 0.0, px, 0.0),
        event_index={"t": t, "p": p, "c": c},
        t_ready_ns=0,
    )


def static_f1(lapses: list[list[_Frame]]) -> float:
    """The static protocol's F1 on the same frames: DAPI acquired at every time point."""
    return pool_scores(
        [detection_scores(f.truth, f.real_labels, ignore=f.ignore) for la in lapses for f in la]
    ).f1


def replay(
    lapses: list[list[_Frame]], threshold: float, max_run: int | None, px: float
) -> dict[str, Any]:
    """The policy over each position's time-lapse; its run's F1 and acquisitions."""
    scores, acquired, frames = [], 0, 0
    for lapse in lapses:
        rules = UncertaintyRules(
            time_points=len(lapse),
            interval_s=1.0,
            threshold=threshold,
            predictor="carry-forward",
            max_predicted_run=max_run,
        )
        policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], rules)
        state = policy.initial_state()
        for t, f in enumerate(lapse):
            state, decision = policy.decide(state, _view(0, t, 0, px), f.model)
            frames += 1
            if decision.summary["acquire"]:
                acquired += 1
                state, _ = policy.decide(state, _view(0, t, 1, px), f.real)
                scores.append(detection_scores(f.truth, f.real_labels, ignore=f.ignore))
            else:
                stand_in = np.asarray(decision.summary["stand_in"])
                scores.append(detection_scores_at(f.truth, stand_in, ignore=f.ignore))
    return {"f1": pool_scores(scores).f1, "acquired": acquired, "frames": frames}


def calibrate(seeds: list[int], positions: int) -> dict[str, Any]:
    """The candidates' figures per setting and the choice (see the module)."""
    px = 6.5 / 20.0
    table: dict[tuple[float, int | None], dict[str, Any]] = {}
    static: dict[str, float] = {}
    for name, (time_points, step_s) in SETTINGS.items():
        started = time.perf_counter()
        lapses = [
            lapse for seed in seeds for lapse in timelapses(seed, positions, time_points, step_s)
        ]
        print(f"{name}: {len(lapses)} time-lapses in {time.perf_counter() - started:.0f} s")
        static[name] = static_f1(lapses)
        for threshold in THRESHOLDS:
            for max_run in MAX_RUNS:
                r = replay(lapses, threshold, max_run, px)
                table.setdefault((threshold, max_run), {})[name] = r
    rows = []
    for (threshold, max_run), by in table.items():
        ok = all(by[n]["f1"] >= static[n] - MARGIN * TOLERANCE for n in by)
        acquired = sum(r["acquired"] for r in by.values())
        frames = sum(r["frames"] for r in by.values())
        rows.append(
            {
                "threshold": threshold,
                "max_predicted_run": max_run,
                "ok": ok,
                "reduction": round(1 - acquired / frames, 4),
                **{
                    f"reduction_{n}": round(1 - r["acquired"] / r["frames"], 4)
                    for n, r in by.items()
                },
                **{f"f1_delta_{n}": round(r["f1"] - static[n], 4) for n, r in by.items()},
            }
        )
    good = [r for r in rows if r["ok"]]
    choice = max(good, key=lambda r: (r["reduction"], r["threshold"])) if good else None
    return {"seeds": seeds, "positions": positions, "static_f1": static, "rows": rows,
            "choice": choice}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    parser.add_argument("--positions", type=int, default=4)
    args = parser.parse_args(argv)
    result = calibrate(args.seeds, args.positions)
    for r in result["rows"]:
        print(r)
    print("static F1:", result["static_f1"])
    print("choice:", json.dumps(result["choice"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
