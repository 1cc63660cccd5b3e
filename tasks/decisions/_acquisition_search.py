"""Searching acquisition settings (exposure, intensity, binning) by real acquisitions.

Each trial is one frame taken with the settings a ``Suggester`` proposes, on a field of its own
(``fields[number]``: trials do not bleach each other), scored from the frame's quality (an
image-based measure computed on the workers, with a ``quality`` attribute in [0, 1]) less a
light-dose penalty (``dose_weight`` per mJ, the dose from the envelope's accounting: power at
100 % x intensity x exposure):

    score = quality - dose_weight * dose_mj

The grid search and the Bayesian optimiser are the same policy with a different suggester, so
they are scored the same way in the same run. Trials are keyed ``trial<number>``: a re-run
under the same run id sends the same command ids, and a suggester that is a pure function of
the trials so far (``GridSuggester``, ``OptunaSuggester``) proposes the same settings again,
so the edge repeats no acquisition. A run stops early with a reason when the next trial's dose
would pass ``dose_budget_mj``; the trials so far are kept.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import useq

from ._policy import Acquire, Command, Decision, FrameView

__all__ = [
    "AcquisitionSettings",
    "GridSuggester",
    "ParameterSearchPolicy",
    "SearchObjective",
    "SearchSpace",
    "SearchState",
    "Suggester",
    "Trial",
]


@dataclass(frozen=True)
class AcquisitionSettings:
    """One point of the search: exposure (ms), light intensity (%) and camera binning."""

    exposure_ms: float
    intensity_pct: float
    binning: int = 1

    def as_dict(self) -> dict[str, float | int]:
        return {
            "exposure_ms": round(self.exposure_ms, 4),
            "intensity_pct": round(self.intensity_pct, 4),
            "binning": self.binning,
        }


@dataclass(frozen=True)
class SearchSpace:
    """Ranges searched: exposure and intensity on a log scale (light acts multiplicatively),
    binning among ``binnings``."""

    exposure_ms: tuple[float, float]
    intensity_pct: tuple[float, float]
    binnings: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        for name in ("exposure_ms", "intensity_pct"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
                raise ValueError(f"{name} range must be (low, high) with 0 < low < high")
        if not self.binnings or any(b < 1 for b in self.binnings):
            raise ValueError("binnings must list at least one binning of 1 or more")

    def grid(self, exposures: int, intensities: int) -> list[AcquisitionSettings]:
        """The static baseline: ``exposures`` x ``intensities`` log-spaced values, every
        binning."""
        e = np.geomspace(*self.exposure_ms, exposures) if exposures > 1 else [self.exposure_ms[1]]
        i = (
            np.geomspace(*self.intensity_pct, intensities)
            if intensities > 1
            else [self.intensity_pct[1]]
        )
        return [
            AcquisitionSettings(float(a), float(b), int(c))
            for c, a, b in itertools.product(self.binnings, e, i)
        ]


@dataclass(frozen=True)
class SearchObjective:
    """How a trial is scored: ``power_mw`` (the channel's power at 100 % from the envelope)
    makes the dose; ``dose_weight`` (per mJ) the penalty."""

    power_mw: float
    dose_weight: float = 1.0

    def dose_mj(self, s: AcquisitionSettings) -> float:
        return self.power_mw * s.intensity_pct / 100.0 * s.exposure_ms / 1000.0

    def score(self, quality: float, s: AcquisitionSettings) -> float:
        return quality - self.dose_weight * self.dose_mj(s)


@dataclass(frozen=True)
class Trial:
    """One scored acquisition."""

    number: int
    settings: AcquisitionSettings
    quality: float
    dose_mj: float
    score: float
    frame: int
    field_um: tuple[float, float]
    measures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            **self.settings.as_dict(),
            "quality": round(self.quality, 5),
            "dose_mj": round(self.dose_mj, 5),
            "score": round(self.score, 5),
            "frame": self.frame,
            "x_um": self.field_um[0],
            "y_um": self.field_um[1],
        }


class Suggester(Protocol):
    """Proposes trial ``number``'s settings from the trials scored so far (None: no more).
    Must be a pure function of its arguments so that a resumed run proposes the same."""

    name: str

    def suggest(self, history: tuple[Trial, ...], number: int) -> AcquisitionSettings | None: ...


class GridSuggester:
    """Every point of a grid, in order."""

    name = "grid"

    def __init__(self, points: list[AcquisitionSettings]) -> None:
        self.points = list(points)

    def suggest(self, history: tuple[Trial, ...], number: int) -> AcquisitionSettings | None:
        del history
        return self.points[number] if number < len(self.points) else None


@dataclass
class SearchState:
    issued: dict[int, AcquisitionSettings] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    stop_reason: str | None = None

    def best(self) -> Trial | None:
        return max(self.trials, key=lambda t: t.score, default=None)


class ParameterSearchPolicy:
    """Up to ``max_trials`` trials, ``in_flight`` at a time (1 for a sequential optimiser)."""

    def __init__(
        self,
        suggester: Suggester,
        objective: SearchObjective,
        fields: list[tuple[float, float]],
        *,
        max_trials: int,
        channel: str,
        z_um: float,
        in_flight: int = 1,
        dose_budget_mj: float | None = None,
        intensity_property: tuple[str, str] = ("Illumination", "Intensity"),
        binning_property: tuple[str, str] | None = ("Camera", "Binning"),
    ) -> None:
        if max_trials < 1 or in_flight < 1:
            raise ValueError("max_trials and in_flight must be at least 1")
        if len(fields) < max_trials:
            raise ValueError(
                f"{max_trials} trials need as many fresh fields, only {len(fields)} given; "
                "widen the region or space the fields closer"
            )
        self.suggester = suggester
        self.objective = objective
        self.fields = fields
        self.max_trials = max_trials
        self.channel = channel
        self.z_um = z_um
        self.in_flight = in_flight
        self.dose_budget_mj = dose_budget_mj
        self.intensity_property = intensity_property
        # None: binning is not set (the envelope need not allow the camera's property)
        self.binning_property = binning_property

    def initial_state(self) -> SearchState:
        return SearchState()

    def first_commands(self, state: SearchState) -> tuple[Command, ...]:
        return self._next(state)

    def decide(
        self, state: SearchState, frame: FrameView, result: Any
    ) -> tuple[SearchState, Decision]:
        number = frame.event_index.get("t")
        if number is None or number not in state.issued:
            raise ValueError(f"frame {frame.index} is no trial of this search")
        quality = getattr(result, "quality", None)
        if quality is None:
            raise ValueError(f"a trial needs a quality score, got {type(result).__name__}")
        settings = state.issued[number]
        measures = result.as_dict() if hasattr(result, "as_dict") else {}
        trial = Trial(
            number,
            settings,
            float(quality),
            self.objective.dose_mj(settings),
            self.objective.score(float(quality), settings),
            frame.index,
            self.fields[number],
            measures,
        )
        state.trials.append(trial)
        state.trials.sort(key=lambda t: t.number)
        commands = self._next(state)
        done = len(state.trials) == len(state.issued) and not commands
        summary = {**trial.as_dict(), "objects": measures.get("objects")}
        if done and state.stop_reason:
            summary["stopped"] = state.stop_reason
        return state, Decision(commands, summary, done=done)

    def _next(self, state: SearchState) -> tuple[Command, ...]:
        commands: list[Command] = []
        while (
            state.stop_reason is None
            and len(state.issued) < self.max_trials
            and len(state.issued) - len(state.trials) < self.in_flight
        ):
            number = len(state.issued)
            settings = self.suggester.suggest(tuple(state.trials), number)
            if settings is None:
                break
            if self.dose_budget_mj is not None:
                planned = sum(self.objective.dose_mj(s) for s in state.issued.values())
                need = self.objective.dose_mj(settings)
                if planned + need > self.dose_budget_mj:
                    state.stop_reason = (
                        f"dose budget: trial {number} needs {need:.3g} mJ but only "
                        f"{self.dose_budget_mj - planned:.3g} mJ of dose_budget_mj "
                        f"{self.dose_budget_mj:g} is left; {len(state.issued)} trials done"
                    )
                    break
            state.issued[number] = settings
            commands.append(self._acquire(number, settings))
        return tuple(commands)

    def _acquire(self, number: int, s: AcquisitionSettings) -> Acquire:
        x, y = self.fields[number]
        event = useq.MDAEvent(
            x_pos=x,
            y_pos=y,
            z_pos=self.z_um,
            channel=self.channel,
            exposure=s.exposure_ms,
            properties=[
                (*self.intensity_property, float(s.intensity_pct)),
                *([(*self.binning_property, int(s.binning))] if self.binning_property else []),
            ],
            index={"t": number},
        )
        return Acquire(f"trial{number:04d}", (event,))
