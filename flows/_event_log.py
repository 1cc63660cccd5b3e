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


def trigger_latencies_ms(decisions: Path) -> list[dict[str, float]]:
    """Per trigger: ``total`` (the trigger frame ready at the edge -> the first frame of the
    fast time point it asked for ready at the edge), ``model`` (the model's own time on the
    trigger frame) and ``beyond_model`` (``total`` less ``model``: transport, queueing, the
    decision, the command, the edge's switch and the fast frame's acquisition)."""
    ready: dict[tuple[int, int], int] = {}
    triggers: list[tuple[int, int, int, float]] = []
    for record in DecisionLog.read(decisions):
        if record.get("type") != "decision":
            continue
        summary = record["decision"]
        if "t_ready_ns" not in summary:
            continue
        key = (int(summary["p"]), int(summary["t"]))
        ready.setdefault(key, int(summary["t_ready_ns"]))
        if summary.get("switch") == "to fast":
            model = float((record.get("latency_ms") or {}).get("model", 0.0))
            triggers.append((key[0], key[1], int(summary["t_ready_ns"]), model))
    out = []
    for p, t, t_ready, model in triggers:
        if (p, t + 1) in ready:
            total = (ready[(p, t + 1)] - t_ready) / 1e6
            out.append({"total": total, "model": model, "beyond_model": total - model})
    return out
