"""Score an adaptive-illumination run on a simulated edge, and the static protocol it must beat.

**SNR on ground truth**, as a microscopist measures it: the followed cell's mean pixel value
over its ground-truth mask, minus the background's mean, over the background's standard
deviation, where the background is every pixel at least ``BACKGROUND_GAP_UM`` from any cell
(ground-truth masks grown by that much; blurred floating cells' pixels left out too). The
frame is the one the edge took; the mask is ``truth_labels`` at the frame's stage position
and sample time (the simulator is deterministic, so this process rebuilds the same sample).

**The static protocol**: one exposure and intensity for every frame, the least light at which
the dimmest followed cell reaches the target SNR on its first frame (found by bisection on
this process's copy of the sample, without bleaching it), split into exposure and intensity by
the run's own rules. It is replayed here, frame for frame at the run's positions and sample
times, on a fresh copy of the sample that it bleaches as it goes, and scored the same way.

**Bleaching**: each followed cell's remaining brightness at the end, ``2 ** (-dose /
bleach_half_dose)`` of its ground-truth cumulative dose (the edge's sample for the run, this
process's copy for the static protocol).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tasks.decisions import IlluminationRules, LightSetting
from tasks.hardware.sim import ScopeState, Simulation, SimulatorConfig, build_simulated_core
from tasks.hardware.sim import truth_labels as sim_truth_labels

__all__ = [
    "BACKGROUND_GAP_UM",
    "FollowedCell",
    "frame_state",
    "remaining_brightness",
    "replay_static_protocol",
    "static_protocol_light",
    "truth_snr",
]

BACKGROUND_GAP_UM = 2.0

FollowedCell = tuple[str, float, float, int]  # name, x µm, y µm, cell id


def truth_snr(sim: Simulation, state: ScopeState, pixels: np.ndarray, cell_id: int) -> float | None:
    """The SNR of cell ``cell_id`` in ``pixels`` (a frame taken with ``state``); None where the
    cell has no pixels in the frame."""
    from scipy import ndimage

    labels, ignore, ids = sim_truth_labels(sim, state)
    k = np.flatnonzero(ids == cell_id)
    if k.size == 0:
        return None
    mask = labels == k[0] + 1
    px = sim.renderer.geometry(state).pixel_um
    grow = max(1, math.ceil(BACKGROUND_GAP_UM / px))
    near = ndimage.binary_dilation((labels > 0) | ignore, iterations=grow)
    background = pixels[~near].astype(np.float64)
    if background.size < 16 or not mask.any():
        return None
    return float((pixels[mask].mean() - background.mean()) / background.std())


def frame_state(row: dict[str, Any], objective: str, channel: str) -> ScopeState:
    """The microscope state a logged frame was taken with."""
    x, y, z = row["stage"]
    return ScopeState(
        x_um=x,
        y_um=y,
        z_um=z,
        objective=objective,
        channel=channel,
        exposure_ms=float(row["exposure_ms"]),
        intensity_pct=float(row["intensity_percent"]),
        t_s=float(row["sample_time_s"]),
    )


def static_protocol_light(
    sim: Simulation,
    firsts: list[tuple[ScopeState, int]],
    rules: IlluminationRules,
    *,
    renders: int = 2,
) -> LightSetting:
    """The least light (split by ``rules``) at which every followed cell reaches the target on
    its first frame: set for the dimmest cell. ``firsts``: (first frame's state, cell id)."""

    def worst(light: float) -> float:
        setting = rules.setting_for(light)
        snrs = []
        for state, cell in firsts:
            lit = _with_light(state, setting)
            values = [
                truth_snr(sim, lit, sim.render(add_dose=False, **_overrides(lit)), cell)
                for _ in range(renders)
            ]
            kept = [v for v in values if v is not None]
            if kept:
                snrs.append(float(np.mean(kept)))
        return min(snrs) if snrs else math.inf

    lo, hi = math.log(rules.min_light), math.log(rules.max_light)
    if worst(math.exp(hi)) < rules.target_snr:
        return rules.setting_for(math.exp(hi))
    for _ in range(14):
        mid = (lo + hi) / 2
        if worst(math.exp(mid)) >= rules.target_snr:
            hi = mid
        else:
            lo = mid
    return rules.setting_for(math.exp(hi))


def replay_static_protocol(
    config: SimulatorConfig,
    frames: list[tuple[ScopeState, int]],
    setting: LightSetting,
) -> tuple[list[float | None], Simulation]:
    """Take ``frames`` (state, followed cell id; in acquisition order) with ``setting`` on a
    fresh copy of the sample, bleaching it; each frame's truth SNR and the bleached copy."""
    _, sim = build_simulated_core(config)
    out: list[float | None] = []
    for state, cell in frames:
        lit = _with_light(state, setting)
        pixels = sim.render(add_dose=True, **_overrides(lit))
        out.append(truth_snr(sim, lit, pixels, cell))
    return out, sim


def remaining_brightness(
    cells: Callable[[tuple[float, float, float, float]], list[dict[str, Any]]],
    followed: list[FollowedCell],
    config: SimulatorConfig,
    channel: str,
) -> dict[str, float | None]:
    """name -> 2 ** (-dose / half dose) of each followed cell; ``cells(region)`` gives the
    ground-truth cell records (``ids``, ``dose_<channel>``) in a region."""
    half = config.bleach_half_dose[channel]
    out: dict[str, float | None] = {}
    for name, x, y, cell_id in followed:
        records = cells((x - 40.0, y - 40.0, x + 40.0, y + 40.0))
        match = [r for r in records if int(r["ids"]) == cell_id]
        dose = float(match[0][f"dose_{channel.lower()}"]) if match else None
        out[name] = None if dose is None else round(2.0 ** (-dose / half), 4)
    return out


def _with_light(state: ScopeState, setting: LightSetting) -> ScopeState:
    from dataclasses import replace

    return replace(state, exposure_ms=setting.exposure_ms, intensity_pct=setting.intensity_percent)


def _overrides(state: ScopeState) -> dict[str, Any]:
    return {k: getattr(state, k) for k in ScopeState.__dataclass_fields__}
