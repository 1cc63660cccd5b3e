"""Scoring verdicts against the simulator's ground truth: recall per injected fault kind (the
image failed on the metric that kind should move) and the false-alarm rate on good images."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tasks.storage.convert import read_tile

from ._config import QCConfig
from ._em_sim import FAULTS, EMMosaicSimulator, Fault, write_sem_tiff
from ._metrics import MetricsRequest, measure_payload
from ._pairs import TilePlacement, TileRegistry
from ._verdict import QCJudge, Verdict

__all__ = ["FAULT_METRICS", "Score", "TileFile", "score_verdicts", "simulate_and_judge"]

# the metrics of which one must flag each fault for it to count as found
FAULT_METRICS: dict[Fault, tuple[str, ...]] = {
    "defocus": ("focus",),
    "astigmatism": ("astigmatism",),
    "noise": ("noise", "snr_db"),
    "brightness": ("brightness",),
    "contrast": ("contrast",),
    "saturation": ("saturated",),
    "charging": ("streak_z",),
    "scan_lines": ("line_z",),
    "drift": ("drift_px",),
    "truncated": ("readable",),
}


@dataclass(frozen=True)
class Score:
    """``recall_by_kind``: found / injected per fault kind; ``false_alarm_rate``: good images
    that reached the alert level / good images (``false_alarms``: which, with why)."""

    tiles: int
    anomalies_true: dict[str, int]
    found: dict[str, int]
    good: int
    false_alarms: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def recall_by_kind(self) -> dict[str, float]:
        return {k: self.found.get(k, 0) / n for k, n in self.anomalies_true.items() if n}

    @property
    def false_alarm_rate(self) -> float:
        return len(self.false_alarms) / self.good if self.good else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "tiles": self.tiles,
            "anomalies_true": self.anomalies_true,
            "recall_by_kind": {k: round(v, 4) for k, v in self.recall_by_kind.items()},
            "false_alarm_rate": round(self.false_alarm_rate, 4),
            "good_images": self.good,
            "false_alarms": self.false_alarms,
            "missed": self.missed,
        }


def score_verdicts(
    verdicts: Mapping[str, Verdict],
    truth: Mapping[str, tuple[Fault, ...]],
    *,
    alert_level: str = "fail",
) -> Score:
    """``verdicts``: the final verdict per image; ``truth``: the faults injected per image."""
    injected: dict[str, int] = {}
    found: dict[str, int] = {}
    good = 0
    false_alarms, missed = [], []
    for image, faults in truth.items():
        verdict = verdicts.get(image)
        flagged = verdict is not None and verdict.at_least(alert_level)  # type: ignore[arg-type]
        if not faults:
            good += 1
            if flagged and verdict is not None:
                false_alarms.append(verdict.summary())
            continue
        for kind in faults:
            injected[kind] = injected.get(kind, 0) + 1
            metrics = FAULT_METRICS[kind]
            hit = verdict is not None and any(
                c.metric in metrics and c.level != "ok" and _rank(c.level) >= _rank(alert_level)
                for c in verdict.checks
            )
            if hit:
                found[kind] = found.get(kind, 0) + 1
            else:
                missed.append(f"{kind}: {verdict.summary() if verdict else image + ' no verdict'}")
    return Score(len(truth), injected, found, good, false_alarms, missed)


def _rank(level: str) -> int:
    return {"ok": 0, "warn": 1, "fail": 2}[level]


@dataclass(frozen=True)
class TileFile:
    """A file to QC, read on whichever process measures it (``load``)."""

    path: Path

    def load(self) -> object:
        return read_tile(self.path).pixels


def simulate_and_judge(
    *,
    seed: int,
    rows: int = 8,
    cols: int = 8,
    tile: int = 512,
    rate: float = 0.25,
    kinds: Iterable[Fault] = FAULTS,
    config: QCConfig | None = None,
) -> tuple[Score, dict[str, Verdict]]:
    """Simulate one mosaic with faults, write it as ZEISS TIFFs, QC every tile in order, and
    score the final verdicts (in this process: the metric code is the workers' own)."""
    n = rows * cols
    plan = EMMosaicSimulator.random_faults(n, seed=seed, rate=rate, kinds=tuple(kinds))
    sim = EMMosaicSimulator(rows=rows, cols=cols, tile=tile, seed=seed, faults=plan)
    judge = QCJudge(config, run_id=f"eval-{seed}")
    registry = TileRegistry()
    request = MetricsRequest()
    final: dict[str, Verdict] = {}
    truth: dict[str, tuple[Fault, ...]] = {}
    with tempfile.TemporaryDirectory(prefix="scopeflow-qc-eval-") as tmp:
        for t in sim.tiles():
            path = write_sem_tiff(Path(tmp) / t.name, t)
            truth[t.name] = t.faults
            metrics = measure_payload(TileFile(path), request)
            placement = TilePlacement(t.stage_x_um, t.stage_y_um, t.pixel_size_um)
            values = dict(metrics.values)
            values.update(registry.add(t.name, metrics, placement).values)
            for verdict in judge.judge(t.name, t.index, values, error=metrics.error):
                final[verdict.image] = verdict
    return score_verdicts(final, truth, alert_level=judge.config.alert_level), final
