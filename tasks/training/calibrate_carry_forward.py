"""Calibrate carry-forward's threshold, flicker weight and run limit on simulated time-lapses.

    python -m tasks.training.calibrate_carry_forward [--seeds 10 ... 17] [--long-seeds 10 ... 13]

Renders brightfield and DAPI time-lapses at random positions of simulator slides (seeds kept
apart from the judged seeds 0-5 and the held-out 6-9), in two settings: the demo's (6 time
points 2 simulated minutes apart) and a long one (16 time points 10 minutes apart, cells moving
and dividing). The virtual stain segments every brightfield frame and the flow's reference
model (``classical-candidates``: the classical nuclei, and a more sensitive segmentation's extra
ones as candidates) every DAPI frame, as in the flow; then the pure
``UncertaintyTriggeredPolicy`` itself runs over each time-lapse for every candidate (threshold,
flicker weight, max_predicted_run), and its run is scored as the flow's is (detection F1 against
the ground truth, pooled: acquired frames as the classical model segments them, predicted ones
by the stand-in the policy logged). The choice: the candidate with the fewest acquisitions whose
F1 is at most ``margin`` x ``tolerance`` below acquiring every frame, pooled, in both settings
(half the goal's 1-point tolerance kept for runs unlike these), and on every seed of the demo
setting too, where each seed also saves at least half the acquisitions (the goal is judged per
seed); ties to the larger threshold.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from scopeflow import ObjectTable
from tasks.decisions import (
    CARRY_FORWARD_FLICKER_WEIGHT,
    FrameView,
    UncertaintyRules,
    UncertaintyTriggeredPolicy,
)
from tasks.inference import (
    InstanceScores,
    analyse_frame,
    detection_scores,
    detection_scores_at,
    load_model,
    measure_objects,
    pool_scores,
)

__all__ = ["SETTINGS", "calibrate", "main", "replay", "static_f1", "timelapses"]

SETTINGS = {"demo": (6, 120.0), "long": (16, 600.0)}  # time points, simulated s between them
THRESHOLDS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # nuclei changed (weighted)
FLICKER_WEIGHTS = (0.3, 0.5, 1.0)
MAX_RUNS = (3, 4, 5, None)
TOLERANCE, MARGIN = 0.01, 0.5
REDUCTION_GOAL = 0.5  # issue 14: at least half the expensive acquisitions saved
_SIZE = 512


@dataclass
class _Frame:
    model: ObjectTable  # virtual stain on brightfield
    real: ObjectTable  # classical on DAPI, then the candidates (classical-candidates)
    truth: np.ndarray
    ignore: np.ndarray
    real_labels: np.ndarray
    real_scores: InstanceScores  # the real frame's, scored once: the static protocol's


def timelapses(seed: int, positions: int, time_points: int, step_s: float) -> list[list[_Frame]]:
    """Per position, per time point: the analysed frames and the truth."""
    from tasks.hardware.sim import SimulatorConfig, build_simulated_core, truth_labels

    cfg = SimulatorConfig(seed=seed, width=_SIZE, height=_SIZE)
    _core, sim = build_simulated_core(cfg)
    stain, reference = load_model("virtual-stain"), load_model("classical-candidates")
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
            # the classical nuclei, then the candidates (as the flow's reference model)
            labels, extras = reference.segment_with_extras(real_px, pixel_size_um=px)
            real = measure_objects(labels, real_px)
            real_labels = np.where(labels <= extras["classical_nuclei"], labels, 0)
            frames.append(
                _Frame(
                    analyse_frame(stain, sim.renderer.render(bf)[0].copy(), pixel_size_um=px),
                    replace(real, extra=extras),
                    truth,
                    ignore,
                    real_labels,
                    detection_scores(truth, real_labels, ignore=ignore),
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
    return pool_scores([f.real_scores for la in lapses for f in la]).f1


def replay(
    lapses: list[list[_Frame]],
    threshold: float,
    max_run: int | None,
    px: float,
    flicker_weight: float = CARRY_FORWARD_FLICKER_WEIGHT,
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
            flicker_weight=flicker_weight,
        )
        policy = UncertaintyTriggeredPolicy([("a", 0.0, 0.0)], rules)
        state = policy.initial_state()
        for t, f in enumerate(lapse):
            state, decision = policy.decide(state, _view(0, t, 0, px), f.model)
            frames += 1
            if decision.summary["acquire"]:
                acquired += 1
                state, _ = policy.decide(state, _view(0, t, 1, px), f.real)
                scores.append(f.real_scores)
            else:
                stand_in = np.asarray(decision.summary["stand_in"])
                scores.append(detection_scores_at(f.truth, stand_in, ignore=f.ignore))
    return {"f1": pool_scores(scores).f1, "acquired": acquired, "frames": frames, "scores": scores}


def calibrate(seeds: list[int], positions: int, long_seeds: list[int]) -> dict[str, Any]:
    """The candidates' figures per setting and the choice (see the module)."""
    px = 6.5 / 20.0
    candidates = [
        (threshold, weight, max_run)
        for threshold in THRESHOLDS
        for weight in FLICKER_WEIGHTS
        for max_run in MAX_RUNS
    ]
    by: dict[tuple[float, float, int | None], dict[str, list[dict[str, Any]]]] = {}
    static: dict[str, float] = {}
    for name, (time_points, step_s) in SETTINGS.items():
        started = time.perf_counter()
        per_seed = {
            seed: timelapses(seed, positions, time_points, step_s)
            for seed in (seeds if name == "demo" else long_seeds)
        }
        print(f"{name}: {sum(map(len, per_seed.values()))} time-lapses in "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        static[name] = static_f1([la for lapses in per_seed.values() for la in lapses])
        for seed, lapses in per_seed.items():
            seed_static = static_f1(lapses)
            for threshold, weight, max_run in candidates:
                r = replay(lapses, threshold, max_run, px, weight)
                r["f1_delta"] = r["f1"] - seed_static
                r["seed"] = seed
                by.setdefault((threshold, weight, max_run), {}).setdefault(name, []).append(r)
    rows = []
    for (threshold, weight, max_run), settings in by.items():
        row: dict[str, Any] = {
            "threshold": threshold,
            "flicker_weight": weight,
            "max_predicted_run": max_run,
        }
        ok, acquired, frames = True, 0, 0
        for name, runs in settings.items():
            n_acq, n = sum(r["acquired"] for r in runs), sum(r["frames"] for r in runs)
            pooled = _pooled_f1(runs)
            acquired, frames = acquired + n_acq, frames + n
            row[f"reduction_{name}"] = round(1 - n_acq / n, 4)
            row[f"f1_delta_{name}"] = round(pooled - static[name], 4)
            ok &= pooled >= static[name] - MARGIN * TOLERANCE
            if name == "demo":
                row["demo_per_seed"] = [
                    (r["seed"], round(1 - r["acquired"] / r["frames"], 3), round(r["f1_delta"], 4))
                    for r in runs
                ]
        row["reduction"] = round(1 - acquired / frames, 4)
        row["ok"] = bool(ok and per_seed_ok(row["demo_per_seed"]))
        rows.append(row)
    good = [r for r in rows if r["ok"]]
    choice = max(good, key=lambda r: (r["reduction"], r["threshold"])) if good else None
    return {"seeds": seeds, "long_seeds": long_seeds, "positions": positions,
            "static_f1": static, "rows": rows, "choice": choice}  # fmt: skip


def per_seed_ok(per_seed: list[tuple[int, float, float]]) -> bool:
    """The goal on every seed of the demo setting, with the margin: (seed, reduction, F1
    delta) rows each saving at least ``REDUCTION_GOAL`` and losing at most ``MARGIN`` x
    ``TOLERANCE`` (the goal is judged per seed; a run limit that repeats one reference's
    segmentation errors spends the whole tolerance on some seed)."""
    return all(red >= REDUCTION_GOAL and delta >= -MARGIN * TOLERANCE for _, red, delta in per_seed)


def _pooled_f1(runs: list[dict[str, Any]]) -> float:
    return pool_scores([s for r in runs for s in r["scores"]]).f1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10, 18)))
    parser.add_argument("--long-seeds", type=int, nargs="+", default=[10, 11, 12, 13])
    parser.add_argument("--positions", type=int, default=6)
    parser.add_argument("--out", type=str, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = calibrate(args.seeds, args.positions, args.long_seeds)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    for r in result["rows"]:
        print(r)
    print("static F1:", result["static_f1"])
    print("choice:", json.dumps(result["choice"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
