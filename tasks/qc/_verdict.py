"""Verdicts: each image's metrics against absolute limits and the run's own baseline.

The baseline is learned from the run's first ``learn_images`` readable images (median and
1.4826 MAD per metric, robust to a few bad ones among them); until it exists, verdicts use the
absolute limits only and are marked provisional, and when it forms each of them is judged
again (a changed level comes back as a revised verdict). Afterwards every image that passes
joins a rolling history, so the baseline follows slow changes (a filament ageing) but not a
sudden fault.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ._config import MetricRule, QCConfig

__all__ = ["Level", "MetricCheck", "QCJudge", "Verdict", "verdict_id"]

Level = Literal["ok", "warn", "fail"]
_RANK = {"ok": 0, "warn": 1, "fail": 2}


class MetricCheck(BaseModel):
    """One metric of one image: its value, the limit it was held to (``threshold``: the one
    crossed, else the nearest failure limit; None when none applies yet), and the outcome.
    ``basis``: ``learned`` (the run's baseline), ``absolute`` (the config file) or
    ``readable`` (the file itself)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    value: float
    level: Level
    threshold: float | None = None
    baseline: float | None = None
    basis: Literal["learned", "absolute", "readable"] = "learned"


class Verdict(BaseModel):
    """The verdict on one image: ``level`` is the worst of its checks. ``image`` names it (a
    path relative to the watched folder, or a frame key), ``id`` is deterministic (run +
    image), so a re-run or a restart reproduces it and consumers can drop repeats."""

    model_config = ConfigDict(frozen=True)

    type: Literal["scopeflow.qc.verdict"] = "scopeflow.qc.verdict"
    id: str
    run_id: str
    image: str
    index: int
    level: Level
    checks: tuple[MetricCheck, ...]
    provisional: bool = False
    revised: bool = False
    error: str | None = None
    t_ready_ns: int | None = None
    t_verdict_ns: int = 0

    @property
    def anomalies(self) -> tuple[MetricCheck, ...]:
        """The checks that were not ok, worst first."""
        bad = [c for c in self.checks if c.level != "ok"]
        return tuple(sorted(bad, key=lambda c: -_RANK[c.level]))

    @property
    def worst(self) -> MetricCheck | None:
        return self.anomalies[0] if self.anomalies else None

    def at_least(self, level: Level) -> bool:
        return _RANK[self.level] >= _RANK[level]

    def summary(self) -> str:
        if self.error:
            return f"{self.image}: {self.level.upper()} unreadable ({self.error})"
        if not self.anomalies:
            return f"{self.image}: OK"
        parts = [
            f"{c.metric}={c.value:.4g} ({c.level}, limit {c.threshold:.4g})"
            if c.threshold is not None
            else f"{c.metric}={c.value:.4g} ({c.level})"
            for c in self.anomalies
        ]
        return f"{self.image}: {self.level.upper()} " + ", ".join(parts)


def verdict_id(run_id: str, image: str) -> str:
    return hashlib.sha1(f"{run_id}\0{image}".encode()).hexdigest()[:20]


@dataclass
class _Pending:
    image: str
    index: int
    values: dict[str, float]
    t_ready_ns: int | None
    verdict: Verdict


class QCJudge:
    """``judge(image, index, values)`` -> the image's verdict, plus any revised verdicts of
    earlier, provisional ones (when this image completes the baseline)."""

    def __init__(self, config: QCConfig | None = None, *, run_id: str = "qc") -> None:
        self.config = config or QCConfig()
        self.run_id = run_id
        self._learning: list[_Pending] = []
        self._history: deque[dict[str, float]] = deque(maxlen=self.config.history)
        self._stats: dict[str, tuple[float, float]] = {}
        self.learned = False

    def baseline(self) -> dict[str, tuple[float, float]]:
        """metric -> (median, spread) on each rule's scale (log10 where the rule says so)."""
        return dict(self._stats)

    def judge(
        self,
        image: str,
        index: int,
        values: dict[str, float],
        *,
        error: str | None = None,
        t_ready_ns: int | None = None,
    ) -> list[Verdict]:
        if error is not None:
            check = MetricCheck(metric="readable", value=0.0, level="fail", basis="readable")
            return [self._verdict(image, index, (check,), t_ready_ns, error=error)]
        verdict = self._verdict(image, index, self._checks(values), t_ready_ns)
        if self.learned:
            if verdict.level == "ok":
                self._remember(values)
            return [verdict]
        verdict = verdict.model_copy(update={"provisional": True})
        self._learning.append(_Pending(image, index, values, t_ready_ns, verdict))
        if len(self._learning) < self.config.learn_images:
            return [verdict]
        return [verdict, *self._learn()]

    def finish(self) -> list[Verdict]:
        """The stream ended before ``learn_images`` came: learn from the images there are (at
        least 3), and return the revised verdicts; nothing to do otherwise."""
        if self.learned or len(self._learning) < 3:
            return []
        return self._learn()

    def _learn(self) -> list[Verdict]:
        """Form the baseline from the learning images that passed the absolute limits, judge
        them against it, drop those that did not pass and form it again (a few rounds: faults
        among the first images must not widen it); those whose outcome changed (level, or
        which metrics are not ok) come back revised."""
        usable = [p.values for p in self._learning if p.verdict.level != "fail"]
        history = usable or [p.values for p in self._learning]
        for _ in range(3):
            self._history.clear()
            self._history.extend(history)
            self._refresh()
            passed = [
                p.values
                for p in self._learning
                if self._verdict(p.image, p.index, self._checks(p.values), None).level == "ok"
            ]
            if len(passed) < 3 or passed == history:
                break
            history = passed
        self.learned = True
        revised: list[Verdict] = []
        for p in self._learning:
            again = self._verdict(p.image, p.index, self._checks(p.values), p.t_ready_ns)
            if _outcome(again) != _outcome(p.verdict):
                revised.append(again.model_copy(update={"revised": True}))
        self._learning.clear()
        return revised

    def _remember(self, values: dict[str, float]) -> None:
        self._history.append(values)
        self._refresh()

    def _refresh(self) -> None:
        stats: dict[str, tuple[float, float]] = {}
        for metric, rule in self.config.rules.items():
            if not rule.learned:
                continue
            xs = [_scale(v[metric], rule) for v in self._history if metric in v]
            xs = [x for x in xs if math.isfinite(x)]
            if len(xs) < 3:
                continue
            arr = np.asarray(xs)
            median = float(np.median(arr))
            spread = max(1.4826 * float(np.median(np.abs(arr - median))), rule.min_spread)
            stats[metric] = (median, spread)
        self._stats = stats

    def _checks(self, values: dict[str, float]) -> tuple[MetricCheck, ...]:
        checks = []
        for metric, value in values.items():
            rule = self.config.rules.get(metric)
            if rule is None or not math.isfinite(value):
                continue
            checks.append(self._check(metric, value, rule))
        return tuple(checks)

    def _check(self, metric: str, value: float, rule: MetricRule) -> MetricCheck:
        level: Level = "ok"
        threshold: float | None = None
        basis: Literal["learned", "absolute"] = "absolute"
        for limit, lvl, below in (
            (rule.fail_below, "fail", True),
            (rule.fail_above, "fail", False),
            (rule.warn_below, "warn", True),
            (rule.warn_above, "warn", False),
        ):
            if limit is None:
                continue
            crossed = value < limit if below else value > limit
            if crossed and _RANK[lvl] > _RANK[level]:
                level, threshold = lvl, limit  # type: ignore[assignment]
            elif threshold is None and lvl == "fail":
                threshold = limit
        baseline = None
        stats = self._stats.get(metric)
        if stats is not None:
            median, spread = stats
            baseline = _unscale(median, rule)
            x = _scale(value, rule)
            z = (x - median) / spread
            for lvl, k in (("fail", rule.fail_z), ("warn", rule.warn_z)):
                low_bad = rule.bad in ("low", "both") and z <= -k
                high_bad = rule.bad in ("high", "both") and z >= k
                if (low_bad or high_bad) and _RANK[lvl] > _RANK[level]:
                    side = -1 if low_bad else 1
                    level, basis = lvl, "learned"  # type: ignore[assignment]
                    threshold = _unscale(median + side * k * spread, rule)
                    break
            if level == "ok" and threshold is None:
                side = -1 if rule.bad == "low" else 1
                threshold = _unscale(median + side * rule.fail_z * spread, rule)
                basis = "learned"
        return MetricCheck(
            metric=metric,
            value=float(value),
            level=level,
            threshold=threshold,
            baseline=baseline,
            basis=basis,
        )

    def _verdict(
        self,
        image: str,
        index: int,
        checks: tuple[MetricCheck, ...],
        t_ready_ns: int | None,
        *,
        error: str | None = None,
    ) -> Verdict:
        level: Level = "ok"
        for c in checks:
            if _RANK[c.level] > _RANK[level]:
                level = c.level
        return Verdict(
            id=verdict_id(self.run_id, image),
            run_id=self.run_id,
            image=image,
            index=index,
            level=level,
            checks=checks,
            error=error,
            t_ready_ns=t_ready_ns,
            t_verdict_ns=time.time_ns(),
        )


def _outcome(verdict: Verdict) -> tuple[str, tuple[tuple[str, str], ...]]:
    return verdict.level, tuple((c.metric, c.level) for c in verdict.anomalies)


def _scale(value: float, rule: MetricRule) -> float:
    if rule.log:
        return math.log10(value) if value > 0 else -math.inf
    return value


def _unscale(value: float, rule: MetricRule) -> float:
    return 10.0**value if rule.log else value
