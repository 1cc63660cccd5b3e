"""Tracking that keeps focus: the tracking policy's time points, each (every ``every``-th)
preceded by a short autofocus call at the position it is about to image.

A pure ``Policy`` composed of ``TrackingPolicy`` and ``FocusSearch``: when the tracking policy
asks for time point ``t`` of position ``p`` (``t`` a multiple of ``every``, ``t > 0``: the
flow focuses every position before the loop), the acquisition is held and a focus sweep is
sent in its place, at the same (re-centred) x, y and due time, keyed
``t<time point>-p<position>-af<round>`` with event index ``a = 1``; when the call ends the
held acquisition goes out at the focus found (a call that finds none keeps the last focus).
The focus frames are scored on the focus analyzer (``tasks.live.RoutedAnalyzer``, by ``a``)
and never reach the tracking policy. Each position's calls are kept in the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import useq

from ._focus_search import FocusResult, FocusRules, FocusSearch, FocusSweep, Method
from ._policy import Acquire, Command, Decision, FrameView
from ._tracking import TrackingPolicy, TrackingState

__all__ = ["FocusedTrackingPolicy", "FocusedTrackingState", "RefocusRules"]


@dataclass(frozen=True)
class RefocusRules:
    """How the tracking loop re-focuses: every ``every``-th time point (0: never), by
    ``method`` (``track``: 3 frames around the last focus), with this light."""

    rules: FocusRules
    every: int = 1
    method: Method = "track"
    channel: str = "DAPI"
    exposure_ms: float = 10.0


@dataclass
class _PositionFocus:
    z_um: float
    search: FocusSearch | None = None
    held: Acquire | None = None
    t: int = 0
    round: int = 0
    sweep: tuple[float, ...] = ()
    scores: dict[int, tuple[float, float]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FocusedTrackingState:
    tracking: TrackingState
    focus: list[_PositionFocus]


class FocusedTrackingPolicy:
    """``TrackingPolicy`` with an autofocus call before its (every ``every``-th) time points."""

    def __init__(self, tracking: TrackingPolicy, refocus: RefocusRules) -> None:
        if tracking.rules.recentre != "next_event":
            raise ValueError("re-focusing needs recentre='next_event' (each time point queued)")
        if refocus.every < 0:
            raise ValueError("every must be >= 0 (0: never re-focus inside the loop)")
        self.tracking = tracking
        self.refocus = refocus

    def initial_state(self) -> FocusedTrackingState:
        inner = self.tracking.initial_state()
        z0 = self.tracking.rules.z_um
        focus = [_PositionFocus(z0 if p.z_um is None else p.z_um) for p in inner.positions]
        return FocusedTrackingState(inner, focus)

    def first_commands(self, state: FocusedTrackingState) -> tuple[Command, ...]:
        return self._intercept(state, self.tracking.first_commands(state.tracking))

    def decide(
        self, state: FocusedTrackingState, frame: FrameView, result: Any
    ) -> tuple[FocusedTrackingState, Decision]:
        index = frame.event_index
        if not index.get("a", 0):
            state.tracking, decision = self.tracking.decide(state.tracking, frame, result)
            commands = self._intercept(state, decision.commands)
            return state, replace(decision, commands=commands)
        t, p = index.get("t", 0), index.get("p", 0)
        summary: dict[str, Any] = {"t": t, "p": p, "role": "autofocus", "z": frame.stage_z_um}
        if not 0 <= p < len(state.focus):
            raise ValueError(f"frame {frame.index} names position {p}, which this run has not")
        pos = state.focus[p]
        r, k = index.get("r", 0), index.get("z", 0)
        if pos.search is None or (t, r) != (pos.t, pos.round) or not 0 <= k < len(pos.sweep):
            return state, Decision(summary={**summary, "stale": True})
        sharp, structure = _score(result)
        pos.scores[k] = (sharp, structure)
        summary.update(sharpness=sharp, structure=structure)
        if len(pos.scores) < len(pos.sweep):
            return state, Decision(summary=summary)
        scores = [pos.scores[i] for i in range(len(pos.sweep))]
        outcome = pos.search.next(list(pos.sweep), [s for s, _ in scores], [g for _, g in scores])
        if isinstance(outcome, FocusSweep):
            return state, Decision((self._sweep(pos, p, outcome, pos.round + 1),), summary)
        held = self._conclude(pos, outcome)
        summary["focus"] = pos.calls[-1]
        return state, Decision((held,), summary)

    # ------------------------------------------------------------------ internals

    def _intercept(
        self, state: FocusedTrackingState, commands: tuple[Command, ...]
    ) -> tuple[Command, ...]:
        """Each tracking acquisition at position p's focus; one due for re-focusing is held
        and a focus sweep goes in its place."""
        out: list[Command] = []
        every = self.refocus.every
        for command in commands:
            if not isinstance(command, Acquire) or len(command.events) != 1:
                out.append(command)
                continue
            event = command.events[0]
            t, p = event.index.get("t", 0), event.index.get("p", 0)
            pos = state.focus[p]
            acquire = replace(command, events=(event.model_copy(update={"z_pos": pos.z_um}),))
            if every == 0 or t == 0 or t % every:
                out.append(acquire)
                continue
            pos.t, pos.held = t, acquire
            method: Method = self.refocus.method
            pos.search = FocusSearch(self.refocus.rules, pos.z_um, method, pos.z_um)
            first = pos.search.first()
            if isinstance(first, FocusResult):  # nothing to image inside the limits
                out.append(self._conclude(pos, first))
                continue
            out.append(self._sweep(pos, p, first, 0, due_s=command.due_s))
        return tuple(out)

    def _sweep(
        self, pos: _PositionFocus, p: int, sweep: FocusSweep, r: int, due_s: float = 0.0
    ) -> Acquire:
        assert pos.held is not None
        held = pos.held.events[0]
        pos.round, pos.sweep, pos.scores = r, sweep.z_um, {}
        events = tuple(
            useq.MDAEvent(
                x_pos=held.x_pos,
                y_pos=held.y_pos,
                z_pos=z,
                channel=self.refocus.channel,
                exposure=self.refocus.exposure_ms,
                index={"t": pos.t, "p": p, "a": 1, "r": r, "z": i},
            )
            for i, z in enumerate(sweep.z_um)
        )
        return Acquire(f"t{pos.t:05d}-p{p:03d}-af{r}", events, due_s=due_s)

    def _conclude(self, pos: _PositionFocus, result: FocusResult) -> Acquire:
        """Record the call; the held acquisition at the focus (due at once: it is late)."""
        pos.calls.append(
            {"t": pos.t, "z_um": round(result.z_um, 4), "found": result.found,
             "frames": result.frames, "method": result.method, "reason": result.reason}
        )  # fmt: skip
        if result.found:
            pos.z_um = result.z_um
        held = pos.held
        assert held is not None
        pos.search, pos.held, pos.sweep, pos.scores = None, None, (), {}
        event = held.events[0].model_copy(update={"z_pos": pos.z_um})
        return replace(held, events=(event,), due_s=0.0)


def _score(result: Any) -> tuple[float, float]:
    """(sharpness, structure) of a focus score; NaN for one the analyzer could not give."""
    sharp = getattr(result, "sharpness", None)
    structure = getattr(result, "structure", None)
    if getattr(result, "error", None) or sharp is None or structure is None:
        return math.nan, math.nan
    return float(sharp), float(structure)
