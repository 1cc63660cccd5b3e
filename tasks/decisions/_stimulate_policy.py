"""Act on an event with the external devices: stimulate the cell that triggered it, and perfuse
a drug once enough events were seen.

`StimulateOnEventPolicy` wraps `EventTriggeredPolicy`: the inner policy decides every frame
(gentle or fast imaging, as before); when it switches a position to fast (an event began), this
policy first sends a stimulation pattern (a useq ``CustomAction``, see `scopeflow.Stimulate`)
with one spot on each cell of the region that looks rounded (else on the region's cell nearest
the position), at that position, due at once so it comes before the fast frames. After
``perfuse_after_events`` events in all (or at ``perfuse_at_s``), it sends one pump run
(`scopeflow.PumpRun`). Keys
(``stim-p<position>-t<time point>``, ``perfuse``) make the command ids, so a re-run sends
nothing twice. Pure: no hardware, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scopeflow import PumpRun, Stimulate, StimulationSpot, pump_event, stimulation_event

from ._event_policy import EventState, EventTriggeredPolicy, RoiState
from ._events import EventView, RoundingDetector
from ._policy import Acquire, Command, Decision, FrameView

__all__ = ["StimulateOnEventPolicy", "StimulationPlan", "StimulationState"]


@dataclass(frozen=True)
class StimulationPlan:
    """What to do on each event (a pattern) and after ``perfuse_after_events`` (a pump run)."""

    device: str = "DMD"
    spot_radius_um: float = 6.0
    intensity: float = 50.0
    duration_ms: float = 500.0
    perfusion: PumpRun | None = None
    perfuse_after_events: int = 1
    perfuse_at_s: float | None = None  # the pump runs at this time (loop seconds) instead

    def __post_init__(self) -> None:
        Stimulate(  # the same checks the edge makes of a pattern's own values
            device=self.device,
            spots=(StimulationSpot(x_um=0, y_um=0, radius_um=self.spot_radius_um),),
            intensity=self.intensity,
            duration_ms=self.duration_ms,
        )
        if self.perfuse_after_events < 1:
            raise ValueError("perfuse_after_events must be 1 or more (events before the pump)")
        if self.perfuse_at_s is not None and not self.perfuse_at_s >= 0:
            raise ValueError("perfuse_at_s must be 0 or more (seconds after the loop starts)")


@dataclass
class StimulationState:
    inner: EventState
    events: int = 0
    perfused: bool = False
    stimulations: list[dict[str, Any]] | None = None

    @property
    def positions(self) -> list[RoiState]:
        """The event-triggered positions (so a flow reads this state as the inner one)."""
        return self.inner.positions


class StimulateOnEventPolicy:
    """``decide`` = the event-triggered decision, plus device actions on each new event."""

    def __init__(self, inner: EventTriggeredPolicy, plan: StimulationPlan) -> None:
        self.inner = inner
        self.plan = plan
        self._rounding = RoundingDetector()

    def initial_state(self) -> StimulationState:
        return StimulationState(self.inner.initial_state(), stimulations=[])

    def first_commands(self, state: StimulationState) -> tuple[Command, ...]:
        commands = self.inner.first_commands(state.inner)
        perfusion, at = self.plan.perfusion, self.plan.perfuse_at_s
        if perfusion is None or at is None:
            return commands
        state.perfused = True  # by the clock, not by the events
        return (*commands, Acquire("perfuse", (pump_event(perfusion),), due_s=at))

    def decide(
        self, state: StimulationState, frame: FrameView, result: Any
    ) -> tuple[StimulationState, Decision]:
        inner, decision = self.inner.decide(state.inner, frame, result)
        state.inner = inner
        if decision.summary.get("switch") != "to fast":
            return state, decision
        p, t = int(decision.summary["p"]), int(decision.summary["t"])
        roi = inner.positions[p]
        spots = self._spots(roi.previous, roi.x_um, roi.y_um)
        commands: list[Command] = []
        summary = dict(decision.summary)
        if spots:
            pattern = Stimulate(
                device=self.plan.device,
                spots=spots,
                intensity=self.plan.intensity,
                duration_ms=self.plan.duration_ms,
            )
            event = stimulation_event(
                pattern, x_pos=roi.x_um, y_pos=roi.y_um, index={"t": t, "p": p}
            )
            due = roi.due_s.get(t + 1, roi.due_s.get(t, 0.0))
            commands.append(Acquire(f"stim-p{p:03d}-t{t:05d}", (event,), due_s=due))
            summary["stimulated"] = [[s.x_um, s.y_um] for s in spots]
            assert state.stimulations is not None
            state.stimulations.append({"p": p, "t": t, "spots": summary["stimulated"]})
        state.events += 1
        perfusion = self.plan.perfusion
        if perfusion and not state.perfused and state.events >= self.plan.perfuse_after_events:
            state.perfused = True
            commands.append(Acquire("perfuse", (pump_event(perfusion, index={"t": t}),)))
            summary["perfused"] = perfusion.reservoir
        commands.extend(decision.commands)
        return state, Decision(tuple(commands), summary, decision.done)

    def _spots(
        self, view: EventView | None, x_um: float, y_um: float
    ) -> tuple[StimulationSpot, ...]:
        if view is None or not view.in_roi.any():
            return ()
        rounded = self._rounding.rounded(view) & view.in_roi
        chosen = np.flatnonzero(rounded)
        if chosen.size == 0:
            inside = np.flatnonzero(view.in_roi)
            distance = np.hypot(view.x_um[inside] - x_um, view.y_um[inside] - y_um)
            chosen = inside[[int(np.argmin(distance))]]
        radius = self.plan.spot_radius_um
        return tuple(
            StimulationSpot(x_um=float(view.x_um[k]), y_um=float(view.y_um[k]), radius_um=radius)
            for k in chosen
        )
