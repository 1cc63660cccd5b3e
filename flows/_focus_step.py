"""Autofocus as a step of another flow (targeted imaging before each detail stack, tracking
before each position's first time point): the check that refuses bad settings before anything
moves, and one focus call at one place as its own loop phase (``find_focus``) with its decision
log under the run's folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scopeflow import ConfigurationError, EnvelopeViolation
from tasks.hardware import EdgeClient, SafetyEnvelope
from tasks.qc import QCWorkers

from ._focus import AutofocusSettings, FocusOptics, find_focus, focus_z_limits

__all__ = [
    "check_autofocus",
    "clamp_centre",
    "focus_errors_um",
    "focus_here",
    "simulated_dof_um",
    "target_cell_z",
]


def check_autofocus(
    edge: EdgeClient, settings: AutofocusSettings, start_z_um: float, flow: str
) -> tuple[float, float]:
    """The z limits the sweeps may use, after checking the settings against the edge's
    envelope: their own z limits, the focus light and exposure, and the z the first search is
    centred on. ConfigurationError naming the fix (nothing has moved yet)."""
    envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
    try:
        lo, hi = focus_z_limits(edge, settings)
    except ValueError as exc:
        raise ConfigurationError(f"{flow}: {exc}") from exc
    try:
        envelope.check_channel(settings.channel, f"{flow}'s autofocus")
        envelope.check_exposure(settings.exposure_ms, f"{flow}'s autofocus")
    except EnvelopeViolation as exc:
        raise ConfigurationError(
            f"the edge's envelope forbids {flow}'s autofocus light: {exc}; change "
            "`autofocus.channel` / `autofocus.exposure_ms` (nothing was acquired)"
        ) from exc
    if not lo <= start_z_um <= hi:
        raise ConfigurationError(
            f"{flow}: the autofocus starts at z {start_z_um:g} µm, outside the sweeps' z limits "
            f"[{lo:g}, {hi:g}] µm (the edge's envelope and `autofocus.z_limits_um`); start "
            "inside them or widen `autofocus.z_limits_um`"
        )
    return lo, hi


def focus_here(
    edge: EdgeClient,
    workers: QCWorkers | None,
    settings: AutofocusSettings,
    *,
    x_um: float,
    y_um: float,
    z_um: float,
    run_id: str,
    phase: str,
    log_dir: Path,
) -> dict[str, Any]:
    """One autofocus call at (x, y) around ``z_um`` as the loop phase ``phase`` (command ids
    ``<run>.<phase>.p000-t00000-af<round>``; a re-run under the same run id replays its
    decision log ``log_dir/<phase>.jsonl`` and moves nothing again). Its result record with
    the place added."""
    log_dir.mkdir(parents=True, exist_ok=True)
    result = find_focus(
        edge,
        workers,
        settings,
        x_um=x_um,
        y_um=y_um,
        z_um=z_um,
        run_id=run_id,
        phase=phase,
        decisions_path=log_dir / f"{phase}.jsonl",
        first_frame=edge.state().frames_journaled,
    )
    return {"phase": phase, "x_um": round(x_um, 3), "y_um": round(y_um, 3),
            "start_z_um": round(z_um, 4), **result}  # fmt: skip


def clamp_centre(z_um: float, half_range_um: float, limits: tuple[float, float]) -> float:
    """The centre of a z-stack of +- ``half_range_um`` moved inside ``limits`` (as little as
    needed), so the stack never asks for a z the envelope refuses."""
    lo, hi = limits
    if hi - lo < 2 * half_range_um:
        raise ConfigurationError(
            f"a z-stack of {2 * half_range_um:g} µm does not fit the z limits [{lo:g}, {hi:g}] "
            "µm; shorten `detail.z_range_um` or widen `autofocus.z_limits_um`"
        )
    return min(max(z_um, lo + half_range_um), hi - half_range_um)


def simulated_dof_um(objective: str, channel: str) -> float | None:
    """The simulator's depth of field for an objective named like ``"40x"`` (None otherwise)."""
    try:
        magnification = float(objective.lower().rstrip("x"))
    except ValueError:
        return None
    return FocusOptics.simulated(magnification, channel).dof_um()


def focus_errors_um(
    edge: EdgeClient,
    samples: list[tuple[float, float, float, float]],
    dof_um: float | None,
    *,
    on: Literal["layer", "cell"] = "layer",
) -> dict[str, Any] | None:
    """On a simulated edge: how far each frame (x, y, z, sample time) was from the in-focus z
    at that place and instant (``/v1/truth``): the cell layer's (``focus_z_um``: a field of
    cells) or the target cell's own height (``cell``: one target at high magnification, where
    a cell's own height, +-0.4 µm about the layer, matters; the target is the cell whose
    nucleus covers the frame's centre, the nearest one if none does, and where two nuclei at
    different heights overlap there, the one nearer the frame's z: either is a right focus),
    and the fraction within +- half the depth of field."""
    if not samples:
        return None
    errors = np.array([z - _truth_z(edge, x, y, z, t, on) for x, y, z, t in samples])
    a = np.abs(errors)
    out: dict[str, Any] = {
        "against": on,
        "frames": len(a),
        "p50": round(float(np.median(a)), 3),
        "max": round(float(a.max()), 3),
        "mean_signed": round(float(errors.mean()), 3),
    }
    if dof_um is not None:
        out["dof_um"] = round(dof_um, 3)
        out["in_dof_fraction"] = round(float(np.mean(a <= dof_um / 2)), 4)
    return out


def _truth_z(edge: EdgeClient, x: float, y: float, z: float, t: float, on: str) -> float:
    r = 1.0 if on == "layer" else 15.0
    truth = edge.truth((x - r, y - r, x + r, y + r), t)
    if on == "cell" and truth["cells"]:
        return target_cell_z(truth["cells"], x, y, z)
    return float(truth["focus_z_um"])


def target_cell_z(cells: list[dict[str, Any]], x: float, y: float, z: float) -> float:
    """The height of the cell at (x, y) (see ``focus_errors_um``)."""
    covering = [c for c in cells if math.hypot(c["x_um"] - x, c["y_um"] - y) < c["radius_um"]]
    if covering:
        return float(min((c["z_um"] for c in covering), key=lambda cz: abs(cz - z)))
    nearest = min(cells, key=lambda c: math.hypot(c["x_um"] - x, c["y_um"] - y))
    return float(nearest["z_um"])
