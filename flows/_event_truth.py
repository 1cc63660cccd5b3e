"""Score an event-triggered run on a simulated edge against the simulator's ground truth.

The simulator is deterministic for a given configuration and seed, so this process rebuilds the
same sample and lists every division whose place lies in a position's region of interest and
whose event (the cell rounding up, ``rounding_s`` before it divides) began while the run watched
it. A division counts as captured when the two detection frames around its
moment were both taken in the fast protocol, no further apart than ``max_spacing_s`` of sample
time (the fast rate, with slack): the division itself was imaged at the fast rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.hardware.sim import SimulatorConfig, VirtualSample

from ._event_log import frames_by_position

__all__ = ["score_event_frames", "score_events_on_simulation"]


def score_events_on_simulation(
    decisions: Path,
    config: SimulatorConfig,
    positions: list[tuple[str, float, float]],
    *,
    roi_um: float,
    max_spacing_s: float,
    rounding_s: float,
) -> dict[str, Any]:
    """``events_true``, ``events_captured``, ``captured_fraction`` and each event's record."""
    return score_event_frames(
        frames_by_position(decisions),
        VirtualSample(config),
        positions,
        roi_um=roi_um,
        max_spacing_s=max_spacing_s,
        rounding_s=rounding_s,
    )


def score_event_frames(
    frames: dict[int, list[tuple[float, int, int]]],
    sample: VirtualSample,
    positions: list[tuple[str, float, float]],
    *,
    roi_um: float,
    max_spacing_s: float,
    rounding_s: float,
) -> dict[str, Any]:
    """The same score from each position's detection frames (sample time, mode 0/1, time
    point), as `frames_by_position` reads them from a decision log or a replay makes them."""
    events: list[dict[str, Any]] = []
    half = roi_um / 2
    for p, (name, x, y) in enumerate(positions):
        rows = frames.get(p, [])
        if len(rows) < 2:
            continue
        region = (x - half, y - half, x + half, y + half)
        # events that begin (the cell rounds up) while the position is watched
        for division in sample.divisions(rows[0][0] + rounding_s, rows[-1][0], region):
            before = max((r for r in rows if r[0] <= division.time_s), key=lambda r: r[0])
            after = min((r for r in rows if r[0] > division.time_s), key=lambda r: r[0])
            spacing = after[0] - before[0]
            captured = bool(before[1] and after[1] and spacing <= max_spacing_s)
            events.append(
                {
                    "position": name,
                    "cell": int(division.parent_id),
                    "time_s": round(float(division.time_s), 1),
                    "x_um": round(float(division.x_um), 1),
                    "y_um": round(float(division.y_um), 1),
                    "spacing_s": round(spacing, 1),
                    "captured": captured,
                }
            )
    captured = sum(e["captured"] for e in events)
    return {
        "events_true": len(events),
        "events_captured": captured,
        "captured_fraction": round(captured / len(events), 4) if events else None,
        "events": events,
    }
