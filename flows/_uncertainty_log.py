"""What an uncertainty-triggered run's decision log says: per position and time point, the
cheap frame, its uncertainty, and the expensive frame when one was acquired, else the nuclei
that stood in for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.live import DecisionLog

__all__ = ["UncertaintyRecord", "read_uncertainty_log"]


@dataclass
class UncertaintyRecord:
    """One position at one time point (frames are edge indices; times the sample's)."""

    p: int
    t: int
    cheap_frame: int
    cheap_time_s: float
    stage: tuple[float, float, float]
    uncertainty: float
    acquire: bool
    expensive_frame: int | None = None
    expensive_time_s: float | None = None
    reason: str | None = None  # uncertain, predicted, no-reference, max-run, always
    stand_in: list[tuple[float, float]] | None = None  # row/col pixel centroids, not acquired

    def frame_of(self, role: str) -> int | None:
        return self.cheap_frame if role == "cheap" else self.expensive_frame


def read_uncertainty_log(decisions: Path) -> list[UncertaintyRecord]:
    """Records in (position, time point) order; an expensive frame joins its time point's."""
    cheap: dict[tuple[int, int], UncertaintyRecord] = {}
    expensive: dict[tuple[int, int], tuple[int, float]] = {}
    for record in DecisionLog.read(decisions):
        if record.get("type") != "decision":
            continue
        summary = record["decision"]
        key = (int(summary.get("p", -1)), int(summary.get("t", -1)))
        if summary.get("role") == "cheap":
            x, y, z = record["stage"]
            cheap[key] = UncertaintyRecord(
                p=key[0],
                t=key[1],
                cheap_frame=int(record["frame"]),
                cheap_time_s=float(record["sample_time_s"]),
                stage=(float(x), float(y), float(z)),
                uncertainty=float(summary["uncertainty"]),
                acquire=bool(summary["acquire"]),
                reason=summary.get("reason"),
                stand_in=[(float(r), float(c)) for r, c in summary["stand_in"]]
                if "stand_in" in summary
                else None,
            )
        elif summary.get("role") == "expensive":
            expensive[key] = (int(record["frame"]), float(record["sample_time_s"]))
    for key, (frame, t_s) in expensive.items():
        if key in cheap:
            cheap[key].expensive_frame, cheap[key].expensive_time_s = frame, t_s
    return [cheap[k] for k in sorted(cheap)]
