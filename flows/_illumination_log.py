"""What an adaptive-illumination run's decision log says: each position's frames (time point,
sample time, exposure, intensity, measured SNR) and why a position stopped early (a command the
edge refused, e.g. the light-dose budget, or an exposure the edge failed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tasks.live import DecisionLog

__all__ = ["frames_by_position", "stop_reasons"]

_KEY = re.compile(r"\.p(\d+)-t(\d+)$")


def frames_by_position(decisions: Path) -> dict[int, list[dict[str, Any]]]:
    """position -> its decided frames in time order: frame index, t, sample time, exposure,
    intensity, light (ms at 100 %) and the SNR the policy measured."""
    out: dict[int, list[dict[str, Any]]] = {}
    for record in DecisionLog.read(decisions):
        if record.get("type") != "decision" or "light" not in record["decision"]:
            continue
        d = record["decision"]
        out.setdefault(int(d["p"]), []).append(
            {
                "frame": record["frame"],
                "t": int(d["t"]),
                "sample_time_s": float(record["sample_time_s"]),
                "stage": record["stage"],
                "exposure_ms": d["exposure_ms"],
                "intensity_percent": d["intensity_percent"],
                "light": d["light"],
                "snr": d["snr"],
                "why": d.get("why"),
            }
        )
    return {p: sorted(rows, key=lambda r: r["t"]) for p, rows in out.items()}


def stop_reasons(decisions: Path) -> dict[int, str]:
    """position -> why its next frame never came: the edge refused the command (its reason),
    or the event failed at the edge (e.g. the dose budget ran out at the exposure)."""
    reasons: dict[int, str] = {}
    for record in DecisionLog.read(decisions):
        kind = record.get("type")
        if kind == "decision":
            for command in record.get("commands", []):
                if command.get("refused"):
                    _note(reasons, command["id"], f"refused by the edge: {command['refused']}")
        elif kind == "end":  # commands sent later than their decision: refused when due
            for line in record.get("refused", []):
                command_id, _, why = str(line).partition(": ")
                _note(reasons, command_id, f"refused by the edge: {why}")
        elif kind == "event_failed":
            _note(reasons, record.get("command_id"), f"failed at the edge: {record['error']}")
    return reasons


def _note(reasons: dict[int, str], command_id: str | None, why: str) -> None:
    match = _KEY.search(command_id or "")
    if match is not None:
        p, t = int(match.group(1)), int(match.group(2))
        reasons.setdefault(p, f"t={t}: {why}")
