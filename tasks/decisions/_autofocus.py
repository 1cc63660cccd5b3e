"""Autofocus as a loop action: each time point of each position first finds focus (a z sweep
whose frames the workers score), then images at it.

A pure ``Policy`` for the closed-loop core. Per position and time point: a ``FocusSearch``
(``search`` the first time, then ``track``: three frames around the focus predicted from the
last one and the drift rate measured so far) whose sweeps are acquisitions keyed
``p<position>-t<time point>-af<round>``, then the imaging events at the focus found, keyed
``p<position>-t<time point>-img``; the next time point is due ``interval_s`` after this one.
With ``autofocus_every = k`` only every k-th time point searches and the ones between image at
the predicted focus (no extra frames); ``k = 0`` is the static protocol: focus found once, at
the first time point, and kept. Event indices carry ``a`` (1: an autofocus frame, 0: an image),
``r`` (the sweep round) and ``z`` (the frame in the sweep), so every frame's role is on record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import useq

from ._focus_search import FocusResult, FocusRules, FocusSearch, FocusSweep, Method
from ._policy import Acquire, Command, Decision, FrameView

__all__ = ["AutofocusPlan", "AutofocusPolicy", "AutofocusState", "PositionFocus"]


@dataclass(frozen=True)
class AutofocusPlan:
    """A time-lapse with autofocus: where, how often, with what light. Times in loop seconds
    (wall clock); lengths in µm."""

    positions: tuple[tuple[str, float, float], ...]
    rules: FocusRules
    start_z_um: float = 0.0
    time_points: int = 1
    interval_s: float = 1.0
    method: Method = "track"
    autofocus_every: int = 1  # 0: only at the first time point (the static protocol)
    focus_channel: str = "DAPI"
    focus_exposure_ms: float = 10.0
    imaging: tuple[tuple[str, float], ...] = (("DAPI", 10.0),)  # empty: autofocus only

    def __post_init__(self) -> None:
        if not self.positions:
            raise ValueError("autofocus needs at least one position")
        if self.time_points < 1 or self.interval_s <= 0:
            raise ValueError("time_points must be >= 1 and interval_s > 0")
        if self.autofocus_every < 0:
            raise ValueError("autofocus_every must be >= 0 (0: focus once, at the start)")
        lo, hi = self.rules.z_limits_um
        if not lo <= self.start_z_um <= hi:
            raise ValueError(
                f"start_z_um {self.start_z_um:g} is outside the z limits [{lo:g}, {hi:g}] µm; "
                "start inside them"
            )


@dataclass
class PositionFocus:
    """One position: its focus estimate, the call in progress and every call's result."""

    name: str
    x_um: float
    y_um: float
    z_um: float
    t: int = 0
    round: int = 0
    search: FocusSearch | None = None
    sweep: tuple[float, ...] = ()
    scores: dict[int, tuple[float, float]] = field(default_factory=dict)
    found: list[tuple[float, float]] = field(default_factory=list)  # (due_s, z) of each focus
    due_s: dict[int, float] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    lost: bool = False  # the last call found no focus: the next one searches again


@dataclass
class AutofocusState:
    positions: list[PositionFocus]


class AutofocusPolicy:
    """``decide`` scores sweep frames until a call ends, then images and plans the next."""

    def __init__(self, plan: AutofocusPlan) -> None:
        self.plan = plan

    def initial_state(self) -> AutofocusState:
        z = self.plan.start_z_um
        return AutofocusState([PositionFocus(n, x, y, z) for n, x, y in self.plan.positions])

    def first_commands(self, state: AutofocusState) -> tuple[Command, ...]:
        return tuple(
            c for p in range(len(state.positions)) for c in self._time_point(state, p, 0, 0.0)
        )

    def decide(
        self, state: AutofocusState, frame: FrameView, result: Any
    ) -> tuple[AutofocusState, Decision]:
        index = frame.event_index
        t, p = index.get("t", 0), index.get("p", 0)
        if not 0 <= p < len(state.positions):
            raise ValueError(f"frame {frame.index} names position {p}, which this run has not")
        pos = state.positions[p]
        summary: dict[str, Any] = {"t": t, "p": p, "position": pos.name, "z": frame.stage_z_um}
        if not index.get("a", 0):
            pos.images += 1
            summary["role"] = "image"
            return state, Decision(summary=summary, done=self._finished(state))
        summary["role"] = "autofocus"
        r, k = index.get("r", 0), index.get("z", 0)
        if t != pos.t or r != pos.round or pos.search is None or not 0 <= k < len(pos.sweep):
            return state, Decision(summary={**summary, "stale": True})
        sharp, structure, error = _score(result)
        pos.scores[k] = (sharp, structure)
        summary.update(sharpness=sharp, structure=structure)
        if error:
            summary["error"] = error
        if len(pos.scores) < len(pos.sweep):
            return state, Decision(summary=summary)
        zs = list(pos.sweep)
        sharpness = [pos.scores[i][0] for i in range(len(zs))]
        outcome = pos.search.next(zs, sharpness, [pos.scores[i][1] for i in range(len(zs))])
        if isinstance(outcome, FocusSweep):
            sweep = self._sweep(pos, p, outcome, pos.round + 1)
            return state, Decision((sweep,), {**summary, "next": outcome.stage})
        commands = self._conclude(state, p, outcome)
        summary["focus"] = pos.calls[-1]
        return state, Decision(commands, summary, done=self._finished(state))

    # ------------------------------------------------------------------ internals

    def _finished(self, state: AutofocusState) -> bool:
        images = len(self.plan.imaging)
        if not images:
            return all(len(pos.calls) >= self._calls_planned() for pos in state.positions)
        return all(pos.images >= self.plan.time_points * images for pos in state.positions)

    def _calls_planned(self) -> int:
        every = self.plan.autofocus_every
        if every == 0:
            return 1
        return len(range(0, self.plan.time_points, every))

    def _time_point(self, state: AutofocusState, p: int, t: int, due_s: float) -> list[Command]:
        """Start time point ``t``: its first sweep, or its images when it does not search."""
        pos = state.positions[p]
        pos.t, pos.round, pos.scores = t, 0, {}
        pos.due_s[t] = due_s
        every = self.plan.autofocus_every
        searches = t == 0 or (every > 0 and t % every == 0)
        if not searches:
            pos.search = None
            pos.z_um = self._predicted(pos, due_s)
            return self._after(state, p, t)
        method: Method = "search" if not pos.found or pos.lost else self.plan.method
        predicted = self._predicted(pos, due_s) if method == "track" else None
        pos.search = FocusSearch(self.plan.rules, pos.z_um, method, predicted)
        first = pos.search.first()
        if isinstance(first, FocusResult):  # nothing to image inside the limits
            pos.calls.append(_call_record(t, first))
            return self._after(state, p, t)
        return [self._sweep(pos, p, first, 0, due_s)]

    def _predicted(self, pos: PositionFocus, due_s: float) -> float:
        """The last focus moved on by the drift rate between the last two foci (at most one
        tracking step, so a bad estimate cannot run away)."""
        if len(pos.found) < 2:
            return pos.z_um
        (t0, z0), (t1, z1) = pos.found[-2], pos.found[-1]
        if t1 <= t0:
            return z1
        move = (z1 - z0) / (t1 - t0) * (due_s - t1)
        step = self.plan.rules.step_um
        return z1 + max(-step, min(step, move))

    def _sweep(
        self, pos: PositionFocus, p: int, sweep: FocusSweep, r: int, due_s: float = 0.0
    ) -> Acquire:
        pos.round, pos.sweep, pos.scores = r, sweep.z_um, {}
        events = tuple(
            useq.MDAEvent(
                x_pos=pos.x_um,
                y_pos=pos.y_um,
                z_pos=z,
                channel=self.plan.focus_channel,
                exposure=self.plan.focus_exposure_ms,
                index={"t": pos.t, "p": p, "a": 1, "r": r, "z": i},
            )
            for i, z in enumerate(sweep.z_um)
        )
        return Acquire(f"p{p:03d}-t{pos.t:05d}-af{r}", events, due_s=due_s)

    def _images(self, pos: PositionFocus, p: int, t: int, z: float, due_s: float) -> Acquire:
        events = tuple(
            useq.MDAEvent(
                x_pos=pos.x_um,
                y_pos=pos.y_um,
                z_pos=z,
                channel=channel,
                exposure=exposure,
                index={"t": t, "p": p, "a": 0, "c": c},
            )
            for c, (channel, exposure) in enumerate(self.plan.imaging)
        )
        return Acquire(f"p{p:03d}-t{t:05d}-img", events, due_s=due_s)

    def _conclude(self, state: AutofocusState, p: int, result: FocusResult) -> list[Command]:
        pos = state.positions[p]
        pos.calls.append(_call_record(pos.t, result))
        pos.z_um = result.z_um
        pos.lost = not result.found
        if result.found:
            pos.found.append((pos.due_s.get(pos.t, 0.0), result.z_um))
        pos.search, pos.sweep = None, ()
        return self._after(state, p, pos.t)

    def _after(self, state: AutofocusState, p: int, t: int) -> list[Command]:
        """Image time point ``t`` at the focus now (due now), and start the next one on time."""
        pos = state.positions[p]
        due = pos.due_s.get(t, 0.0)
        commands: list[Command] = []
        if self.plan.imaging:
            commands.append(self._images(pos, p, t, pos.z_um, due))
        if t + 1 < self.plan.time_points:
            commands.extend(self._time_point(state, p, t + 1, due + self.plan.interval_s))
        return commands


def _score(result: Any) -> tuple[float, float, str | None]:
    """(sharpness, structure, error) of a worker's focus score; NaN for one it could not give."""
    error = getattr(result, "error", None)
    sharp = getattr(result, "sharpness", None)
    structure = getattr(result, "structure", None)
    if error or sharp is None or structure is None:
        why = error or f"the analyzer gave {type(result).__name__}, not a focus score"
        return math.nan, math.nan, str(why)
    return float(sharp), float(structure), None


def _call_record(t: int, result: FocusResult) -> dict[str, Any]:
    return {
        "t": t,
        "z_um": round(result.z_um, 4),
        "found": result.found,
        "frames": result.frames,
        "method": result.method,
        "reason": result.reason,
    }
