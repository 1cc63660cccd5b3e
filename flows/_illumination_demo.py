"""The adaptive-illumination demo: dim and bright cells on a simulated microscope, each imaged
at a target SNR, scored against the static protocol on the simulator's ground truth.

The simulated sample has a wide cell-to-cell spread of nuclear brightness
(``brightness_sigma``: dim and bright cells a factor ~4 apart) and a photolabile dye
(``bleach_half_dose``: half its signal gone after ``DEMO_HALF_DOSE`` ms at 100 % intensity). The
demo follows in-focus cells spread over the brightness range (evenly spaced quantiles), runs
the ``adaptive_illumination`` flow on them with the model on a local Ray or Dask worker, and
scores each frame's SNR on ground truth; the static protocol (one light for every frame, set
for the dimmest cell) is replayed on a copy of the sample at the same places and times (see
``_illumination_truth``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from tasks.hardware.sim import SimulatorConfig, VirtualSample

from ._demo_scope import simulated_scope
from ._illumination_log import frames_by_position
from ._illumination_params import NOISE_THRESHOLD, AdaptiveIlluminationParams
from ._illumination_plots import render_dose_png, render_light_png
from ._illumination_truth import (
    FollowedCell,
    frame_state,
    remaining_brightness,
    replay_static_protocol,
    static_protocol_light,
    truth_snr,
)
from ._tracking_params import TrackedPosition

__all__ = ["DEMO_SIM", "pick_cells_by_brightness", "run_illumination_demo"]

CAMERA = 256
OBJECTIVE = "20x"
CHANNEL = "DAPI"
REGION = (2_000.0, 2_000.0, 8_000.0, 8_000.0)
DEMO_HALF_DOSE = 50.0  # ms at 100 %: the static protocol bleaches ~20 % in a 20-frame run
DEMO_SIM: dict[str, Any] = {
    "brightness_sigma": {"DAPI": 0.7, "GFP": 0.5},
    "bleach_half_dose": {"DAPI": DEMO_HALF_DOSE, "GFP": 8_000.0},
}


def pick_cells_by_brightness(
    config: SimulatorConfig, t_s: float, count: int, *, separation_um: float = 200.0
) -> list[FollowedCell]:
    """``count`` in-focus cells with no other cell within 20 µm, far apart, at evenly spaced
    quantiles of the candidates' brightness (the dimmest and brightest included)."""
    sample = VirtualSample(config)
    cells = sample.cells_at(t_s, REGION)
    xy = np.stack([cells.x_um, cells.y_um], axis=1)
    from scipy.spatial import cKDTree

    tree = cKDTree(xy)
    alone = np.array([len(tree.query_ball_point(p, 20.0)) == 1 for p in xy], bool)
    ok = alone & (np.abs(cells.z_um - config.focal_plane_z_um) < 1.0) & (cells.phase == 0)
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(cells.brightness_dapi[candidates])]
    chosen: list[FollowedCell] = []
    for q in np.linspace(0.02, 0.98, 4 * count):
        k = order[min(int(q * order.size), order.size - 1)]
        x, y = float(cells.x_um[k]), float(cells.y_um[k])
        if all(np.hypot(x - cx, y - cy) > separation_um for _, cx, cy, _ in chosen):
            chosen.append((f"cell-{int(cells.ids[k])}", x, y, int(cells.ids[k])))
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} isolated in-focus cells; ask for fewer positions")
    # evenly over the brightness range: every 4th of the finely spaced picks, ends kept
    keep = np.unique(np.round(np.linspace(0, len(chosen) - 1, count)).astype(int))
    return [chosen[i] for i in keep]


def run_illumination_demo(
    data_dir: Path,
    *,
    positions: int = 6,
    time_points: int = 20,
    target_snr: float = 10.0,
    model: str = "classical",
    backend: str = "ray",
    seed: int = 0,
    envelope: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the adaptive-illumination flow on the simulator end to end; its summary with the
    ground-truth scores against the static protocol."""
    from tasks.hardware import EdgeClient

    from .adaptive_illumination import adaptive_illumination

    config = SimulatorConfig(seed=seed, width=CAMERA, height=CAMERA, time_scale=1.0, **DEMO_SIM)

    def edge_args(run_dir: Path) -> list[str]:
        sim_file = run_dir / "simulator.yaml"
        sim_file.write_text(yaml.safe_dump(DEMO_SIM))
        args = ["--camera-size", str(CAMERA), "--seed", str(seed), "--sim-config", str(sim_file)]
        return args + (["--envelope", str(envelope)] if envelope is not None else [])

    with simulated_scope(data_dir, f"illum-demo-s{seed}", edge_args, quiet=quiet) as scope:
        edge, console, run_dir = scope.edge, scope.console, scope.run_dir
        followed = pick_cells_by_brightness(config, scope.sample_time_s(), positions)
        params = AdaptiveIlluminationParams(
            positions=[TrackedPosition(name=n, x_um=x, y_um=y) for n, x, y, _ in followed],
            objective=OBJECTIVE,
            channel=CHANNEL,
            target_snr=target_snr,
            time_points=time_points,
            model=model,
            model_options={} if model != "classical" else dict(NOISE_THRESHOLD),
            backend={"kind": backend, "workers": 1},
            edge_url=edge.url,
            edge_token_file=edge.token_file,
            output_dir=run_dir,
        )
        with console.status(f"imaging {positions} cells for {time_points} time points..."):
            summary = adaptive_illumination(params)
        decisions = Path(summary["run_dir"]) / "decisions.jsonl"
        per_position = frames_by_position(decisions)
        with (
            console.status("scoring on ground truth, replaying the static protocol..."),
            EdgeClient(edge.url, token_file=edge.token_file) as client,
        ):
            envelope_model = client.info()["envelope"]
            scores = _score(config, params, followed, per_position, client)
    summary.update(scores)
    summary["dose_fixed_mj"] = round(
        scores["frames_static"] * _dose_per_frame(envelope_model, scores["static_setting"]), 4
    )
    fixed = summary["dose_fixed_mj"]
    summary["dose_ratio"] = round(summary["dose_mj"] / fixed, 4) if fixed else None
    _charts(Path(summary["run_dir"]), params, per_position, summary, envelope_model)
    summary["seed"] = seed
    summary["wall_s"] = scope.wall_s()
    _print(console, summary)
    return summary


def _score(
    config: SimulatorConfig,
    params: AdaptiveIlluminationParams,
    followed: list[FollowedCell],
    per_position: dict[int, list[dict[str, Any]]],
    client: Any,
) -> dict[str, Any]:
    from tasks.hardware.sim import build_simulated_core

    _, sim = build_simulated_core(config)
    order: list[tuple[int, dict[str, Any]]] = sorted(
        ((p, r) for p, rows in per_position.items() for r in rows), key=lambda pr: pr[1]["frame"]
    )
    adaptive: list[float | None] = []
    for p, row in order:
        state = frame_state(row, params.objective, params.channel)
        pixels = client.frame(row["frame"]).pixels
        adaptive.append(truth_snr(sim, state, pixels, followed[p][3]))
    firsts = [
        (frame_state(rows[0], params.objective, params.channel), followed[p][3])
        for p, rows in sorted(per_position.items())
    ]
    rules = params.rules()
    setting = static_protocol_light(sim, firsts, rules)
    replay = [
        (frame_state(row, params.objective, params.channel), followed[p][3]) for p, row in order
    ]
    static, static_sim = replay_static_protocol(config, replay, setting)
    t_end = max((r["sample_time_s"] for _, r in order), default=0.0) + 1.0
    remaining_adaptive = remaining_brightness(
        lambda region: client.truth(region, t_end)["cells"], followed, config, params.channel
    )
    remaining_static = remaining_brightness(
        lambda region: static_sim.truth(region, t_end).to_records(),
        followed,
        config,
        params.channel,
    )
    target = params.target_snr
    return {
        "snr_reached_fraction": _fraction(adaptive, target),
        "snr_reached_fraction_static": _fraction(static, target),
        "snr_truth": {
            followed[p][0]: [
                None if s is None else round(s, 2)
                for (q, _), s in zip(order, adaptive, strict=True)
                if q == p
            ]
            for p in sorted(per_position)
        },
        "static_setting": {
            "exposure_ms": setting.exposure_ms,
            "intensity_percent": setting.intensity_percent,
            "light": round(setting.light, 5),
        },
        "frames_static": len(replay),
        "bleaching": {
            "remaining_adaptive": remaining_adaptive,
            "remaining_static": remaining_static,
            "remaining_adaptive_mean": _mean(remaining_adaptive.values()),
            "remaining_static_mean": _mean(remaining_static.values()),
        },
    }


def _dose_per_frame(envelope: dict[str, Any], setting: dict[str, float]) -> float:
    from tasks.hardware import SafetyEnvelope

    model = SafetyEnvelope.model_validate(envelope)
    return model.dose_mj(CHANNEL, setting["exposure_ms"], setting["intensity_percent"])


def _charts(
    run_dir: Path,
    params: AdaptiveIlluminationParams,
    per_position: dict[int, list[dict[str, Any]]],
    summary: dict[str, Any],
    envelope: dict[str, Any],
) -> None:
    """The light and dose charts again, now with the static protocol beside the run."""
    from tasks.hardware import SafetyEnvelope

    from .adaptive_illumination import cumulative_dose

    model = SafetyEnvelope.model_validate(envelope)
    names = [p.name for p in params.positions]
    adaptive = cumulative_dose(per_position, params.channel, model)
    per_t = summary["dose_fixed_mj"] / max(1, len(adaptive))
    static = [(t, per_t * (k + 1)) for k, (t, _) in enumerate(adaptive)]
    (run_dir / "dose-vs-static.png").write_bytes(
        render_dose_png({"adaptive": adaptive, "static (dimmest cell)": static})
    )
    (run_dir / "light-vs-static.png").write_bytes(
        render_light_png(
            {names[p]: rows for p, rows in sorted(per_position.items())},
            params.target_snr,
            summary["static_setting"]["light"],
        )
    )


def _fraction(values: list[float | None], target: float) -> float | None:
    if not values:
        return None
    return round(sum(1 for v in values if v is not None and v >= target) / len(values), 4)


def _mean(values: Any) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 4) if kept else None


def _print(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="scopeflow demo: adaptive illumination")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key not in ("stores", "snr_truth"):
            table.add_row(key, str(value))
    console.print(table)
