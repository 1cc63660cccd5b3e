"""What an event-triggered run's decision log says: each position's detection frames (sample
time, mode) and the trigger latencies."""

from __future__ import annotations

from pathlib import Path

from tasks.live import DecisionLog

__all__ = ["frames_by_position", "trigger_latencies_ms"]


def frames_by_position(decisions: Path) -> dict[int, list[tuple[float, int, int]]]:
    """position -> (sample time s, mode 0/1, time point) of each detection frame, in order."""
    out: dict[int, list[tuple[float, int, int]]] = {}
    for record in DecisionLog.read(decisions):
        if record.get("type") != "decision" or record["decision"].get("role") != "detect":
            continue
        index = record["event_index"]
        out.setdefault(int(index.get("p", 0)), []).append(
            (float(record["sample_time_s"]), int(index.get("m", 0)), int(index.get("t", 0)))
        )
    return {p: sorted(rows) for p, rows in out.items()}


def trigger_latencies_ms(decisions: Path) -> list[float]:
    """Trigger frame ready -> the first frame of the fast time point it asked for ready."""
    ready: dict[tuple[int, int], int] = {}
    triggers: list[tuple[int, int, int]] = []
    for record in DecisionLog.read(decisions):
        if record.get("type") != "decision":
            continue
        summary = record["decision"]
        if "t_ready_ns" not in summary:
            continue
        key = (int(summary["p"]), int(summary["t"]))
        ready.setdefault(key, int(summary["t_ready_ns"]))
        if summary.get("switch") == "to fast":
            triggers.append((key[0], key[1], int(summary["t_ready_ns"])))
    return [
        (ready[(p, t + 1)] - t_ready) / 1e6 for p, t, t_ready in triggers if (p, t + 1) in ready
    ]
