"""Uncertainty-triggered acquisition: predict the expensive channel, acquire it only when unsure.

Every time point, each position is imaged in the cheap channel only (transmitted light: no
fluorescence dose). The workers predict the expensive channel's content from it (a virtual
stain) and report how unsure they are (the ObjectTable's ``extra[measure]``). When that passes
``threshold``, the policy acquires the expensive channel there, at once; otherwise the
prediction stands in for it. ``always`` is the static protocol it is measured against: the
expensive channel at every time point. Frames are keyed ``p<position>-t<time point>`` (and
``-x`` for the expensive one), so a re-run sends the same command ids; each event's index
carries ``c`` (0 cheap, 1 expensive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import useq

from scopeflow import ObjectTable

from ._policy import Acquire, Command, Decision, FrameView

__all__ = ["UncertaintyRules", "UncertaintyState", "UncertaintyTriggeredPolicy"]


@dataclass(frozen=True)
class UncertaintyRules:
    """When and how each channel is taken, and the uncertainty that triggers the expensive one."""

    time_points: int
    interval_s: float
    threshold: float
    cheap: tuple[str, float] = ("BF", 10.0)  # channel, exposure ms
    expensive: tuple[str, float] = ("DAPI", 50.0)
    always: bool = False  # the static protocol: the expensive channel every time point
    z_um: float = 0.0
    measure: str = "uncertainty"  # the key of the analysis' ``extra`` compared to threshold

    def __post_init__(self) -> None:
        if self.time_points < 1:
            raise ValueError(f"time_points must be at least 1, got {self.time_points}")
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold}")
        if self.cheap[0] == self.expensive[0]:
            raise ValueError(
                f"the cheap and expensive channels are both {self.cheap[0]!r}; predict one "
                "channel from another"
            )


@dataclass
class UncertaintyState:
    """Per position: when each time point was due and what was decided there."""

    due_s: dict[tuple[int, int], float] = field(default_factory=dict)
    uncertainty: dict[tuple[int, int], float] = field(default_factory=dict)
    acquired: list[tuple[int, int]] = field(default_factory=list)  # (position, time point)


class UncertaintyTriggeredPolicy:
    """``decide`` sees every frame; only each cheap frame changes the plan."""

    def __init__(self, positions: list[tuple[str, float, float]], rules: UncertaintyRules) -> None:
        if not positions:
            raise ValueError("uncertainty-triggered acquisition needs at least one position")
        self.positions = positions
        self.rules = rules

    def initial_state(self) -> UncertaintyState:
        return UncertaintyState()

    def first_commands(self, state: UncertaintyState) -> tuple[Command, ...]:
        return tuple(self._cheap(state, p, 0, 0.0) for p in range(len(self.positions)))

    def events_per_time_point(self, expensive: bool) -> list[useq.MDAEvent]:
        """The one event a time point acquires in either channel (for envelope checks and
        dose sums; position left out)."""
        return [self._event(int(expensive), 0, 0, 0.0, 0.0)]

    def decide(
        self, state: UncertaintyState, frame: FrameView, result: Any
    ) -> tuple[UncertaintyState, Decision]:
        index = frame.event_index
        t, p, c = index.get("t", 0), index.get("p", 0), index.get("c", 0)
        if not 0 <= p < len(self.positions):
            raise ValueError(f"frame {frame.index} names position {p}, which this run has not")
        summary: dict[str, Any] = {"t": t, "p": p, "position": self.positions[p][0]}
        if c:
            return state, Decision(summary={**summary, "role": "expensive"})
        summary["role"] = "cheap"
        if not isinstance(result, ObjectTable):
            raise ValueError(f"the prediction needs an ObjectTable, got {type(result).__name__}")
        if self.rules.measure not in result.extra:
            raise ValueError(
                f"the analysis reports no {self.rules.measure!r} (it has "
                f"{sorted(result.extra) or 'none'}); run a model that reports it, e.g. "
                "'virtual-stain'"
            )
        u = float(result.extra[self.rules.measure])
        state.uncertainty[(p, t)] = u
        acquire = self.rules.always or u > self.rules.threshold
        summary.update({"uncertainty": round(u, 5), "acquire": acquire, "objects": len(result)})
        now = state.due_s.get((p, t), 0.0)
        commands: list[Command] = []
        if acquire:
            state.acquired.append((p, t))
            x, y = self.positions[p][1:]
            commands.append(Acquire(f"p{p:03d}-t{t:05d}-x", (self._event(1, t, p, x, y),), now))
        if t + 1 < self.rules.time_points:
            commands.append(self._cheap(state, p, t + 1, now + self.rules.interval_s))
        return state, Decision(tuple(commands), summary)

    def _cheap(self, state: UncertaintyState, p: int, t: int, due_s: float) -> Acquire:
        state.due_s[(p, t)] = due_s
        x, y = self.positions[p][1:]
        return Acquire(f"p{p:03d}-t{t:05d}", (self._event(0, t, p, x, y),), due_s)

    def _event(self, c: int, t: int, p: int, x: float, y: float) -> useq.MDAEvent:
        channel, exposure = self.rules.expensive if c else self.rules.cheap
        return useq.MDAEvent(
            x_pos=x,
            y_pos=y,
            z_pos=self.rules.z_um,
            channel=channel,
            exposure=exposure,
            index={"t": t, "p": p, "c": c},
        )
