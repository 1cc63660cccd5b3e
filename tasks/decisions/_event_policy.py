"""Event-triggered protocol switching: observe gently, image events fast, then go back.

Every position starts on the gentle protocol (one channel, low exposure, a slow rate). Each
time point's first frame (channel 0 at the focal plane) is shown to the detectors, restricted
to the position's region of interest (a square of ``roi_um`` around it). When one fires, that
position alone switches to the fast protocol (more channels, a z-stack, a higher rate) from
now on; it returns to the gentle one ``after_frames`` fast time points after the last frame any
detector fired on, or after ``max_fast_s`` in any case (either way the objects the event fired
on are then muted for ``cooldown_s``, so a divided cell's daughters do not trigger again: a
trigger elsewhere in the region switches at once, so one false trigger does not hide another
cell's event; a detector that cannot say which objects it fired on mutes the whole region; a
fresh onset while fast, from a detector with ``onsets``, restarts
the time limit, within ``rearm_limit`` x ``max_fast_s`` per stretch: a false trigger that the
same cell's real rounding follows still sees it through). A detector that raises stops its
position (the reason is kept, the others go on). With ``end_on`` (e.g. the division detector)
an event lasts until one of those detectors fires, then ``after_frames`` more. Frames are keyed
``p<position>-t<time point>``, so a re-run sends the same command ids; each event's index
carries ``m`` (0 gentle, 1 fast) so the mode of every frame is on record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import useq

from scopeflow import ObjectTable

from ._events import DivisionDetector, EventDetector, EventView, RoundingDetector
from ._geometry import FrameGeometry
from ._policy import Acquire, Command, Decision, FrameView

__all__ = [
    "EventRules",
    "EventState",
    "EventTriggeredPolicy",
    "FastProtocol",
    "GentleProtocol",
    "RoiState",
]

Mode = Literal["gentle", "fast", "stopped"]


@dataclass(frozen=True)
class GentleProtocol:
    """Watching: one channel, a short exposure, every ``interval_s``."""

    channel: str = "DAPI"
    exposure_ms: float = 10.0
    interval_s: float = 4.0


@dataclass(frozen=True)
class FastProtocol:
    """Imaging an event: every channel at every z offset, every ``interval_s``. The first
    channel at offset 0 is the frame the detectors see."""

    channels: tuple[tuple[str, float], ...] = (("DAPI", 50.0), ("GFP", 50.0))
    z_offsets_um: tuple[float, ...] = (0.0,)
    interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("the fast protocol needs at least one (channel, exposure_ms)")
        if 0.0 not in self.z_offsets_um:
            raise ValueError(
                f"the fast protocol's z_offsets_um {self.z_offsets_um} must include 0.0 (the "
                "plane the detectors see)"
            )


@dataclass(frozen=True)
class EventRules:
    """How long to watch, where to look, and when to switch back."""

    duration_s: float
    gentle: GentleProtocol = GentleProtocol()
    fast: FastProtocol = FastProtocol()
    roi_um: float = 40.0
    z_um: float = 0.0
    after_frames: int = 2  # fast time points kept after the detectors fall silent
    max_fast_s: float = 30.0
    cooldown_s: float = 10.0
    # detectors whose firing ends an event (then ``after_frames`` more); none: an event ends
    # when every detector has been silent for ``after_frames`` time points
    end_on: tuple[str, ...] = ()
    history: int = 12  # previous frames a detector may look back through
    mute_um: float = 8.0  # after a time limit, fires this close to the event's objects wait
    # a fresh onset (a detector's ``onsets``) while fast restarts ``max_fast_s``, up to this
    # many times ``max_fast_s`` per fast stretch (1: never)
    rearm_limit: float = 2.0

    def __post_init__(self) -> None:
        if self.rearm_limit < 1:
            raise ValueError(
                f"rearm_limit ({self.rearm_limit:g}) must be at least 1 (1: a fresh onset never "
                "restarts the time limit)"
            )
        if self.fast.interval_s >= self.gentle.interval_s:
            raise ValueError(
                f"the fast protocol's interval ({self.fast.interval_s:g} s) must be shorter than "
                f"the gentle one's ({self.gentle.interval_s:g} s)"
            )


@dataclass
class RoiState:
    """One position: its mode, its schedule and what happened there."""

    name: str
    x_um: float
    y_um: float
    mode: Mode = "gentle"
    due_s: dict[int, float] = field(default_factory=dict)  # time point -> when it was due
    fast_since_s: float | None = None  # when the time limit started counting
    stretch_since_s: float | None = None  # when the position went fast
    quiet: int = 0
    ending: bool = False
    cooldown_until_s: float = -np.inf
    spots: list[tuple[float, float]] | None = None  # where this event's detectors fired
    muted: list[tuple[float, float]] | None = None  # None: the whole region while cooling
    previous: EventView | None = None
    triggers: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None


@dataclass
class EventState:
    positions: list[RoiState]


class EventTriggeredPolicy:
    """``decide`` sees every frame; only each time point's detection frame changes the plan."""

    def __init__(
        self,
        positions: list[tuple[str, float, float]],
        rules: EventRules,
        detectors: tuple[EventDetector, ...] | None = None,
    ) -> None:
        if not positions:
            raise ValueError("event-triggered imaging needs at least one position")
        self.positions = positions
        self.rules = rules
        self.detectors = (
            detectors if detectors is not None else (RoundingDetector(), DivisionDetector())
        )
        if not self.detectors:
            raise ValueError("give at least one event detector")

    def initial_state(self) -> EventState:
        return EventState([RoiState(name, x, y) for name, x, y in self.positions])

    def first_commands(self, state: EventState) -> tuple[Command, ...]:
        return tuple(self._acquire(state, p, 0, 0.0) for p in range(len(state.positions)))

    def events_per_time_point(self, mode: Literal["gentle", "fast"]) -> list[useq.MDAEvent]:
        """The events one time point of ``mode`` acquires (position left out), for dose sums."""
        return self._events(mode, 0, 0, 0.0, 0.0)

    def decide(
        self, state: EventState, frame: FrameView, result: Any
    ) -> tuple[EventState, Decision]:
        index = frame.event_index
        t, p = index.get("t", 0), index.get("p", 0)
        if not 0 <= p < len(state.positions):
            raise ValueError(f"frame {frame.index} names position {p}, which this run has not")
        roi = state.positions[p]
        mode = "fast" if index.get("m", 0) else "gentle"
        summary: dict[str, Any] = {
            "t": t,
            "p": p,
            "position": roi.name,
            "mode": mode,
            "t_ready_ns": frame.t_ready_ns,
        }
        if not self._detection_frame(index):
            return state, Decision(summary={**summary, "role": "extra"})
        summary["role"] = "detect"
        if roi.mode == "stopped":
            return state, Decision(summary={**summary, "stopped": roi.stop_reason})
        if not isinstance(result, ObjectTable):
            raise ValueError(f"event detection needs an ObjectTable, got {type(result).__name__}")
        view = self._view(roi, frame, result)
        try:
            fired, spots, onset = self._detect(view)
        except Exception as exc:  # a user's detector: its position stops, the others go on
            roi.mode = "stopped"
            roi.stop_reason = f"detector failed at t={t}: {type(exc).__name__}: {exc}"
            return state, Decision(summary={**summary, "stopped": roi.stop_reason})
        roi.previous = _truncated(view, self.rules.history)
        now = roi.due_s.get(t, 0.0)
        summary["fired"] = fired
        if onset and roi.mode == "fast":
            self._rearm(roi, now)
        summary["switch"] = self._switch(roi, fired, spots, now, t, frame)
        summary["next_mode"] = roi.mode
        interval = (
            self.rules.fast.interval_s if roi.mode == "fast" else self.rules.gentle.interval_s
        )
        due = now if summary["switch"] == "to fast" else now + interval
        if due > self.rules.duration_s:
            return state, Decision(summary=summary)
        return state, Decision((self._acquire(state, p, t + 1, due),), summary)

    def _detect(self, view: EventView) -> tuple[list[str], list[tuple[float, float]] | None, bool]:
        """The detectors that fired, where (None: one that fired cannot say where), and
        whether one saw a fresh onset in the region."""
        fired: list[str] = []
        spots: list[tuple[float, float]] | None = []
        onset = False
        for detector in self.detectors:
            onsets = getattr(detector, "onsets", None)
            if onsets is not None:
                onset = onset or bool((np.asarray(onsets(view), bool) & view.in_roi).any())
            where = getattr(detector, "where", None)
            if where is None:
                if detector.detect(view):
                    fired.append(detector.name)
                    spots = None
                continue
            mask = np.asarray(where(view), bool) & view.in_roi
            if mask.any():
                fired.append(detector.name)
                if spots is not None:
                    spots += [
                        (float(x), float(y))
                        for x, y in zip(view.x_um[mask], view.y_um[mask], strict=True)
                    ]
        return fired, spots, onset

    def _muted(self, roi: RoiState, spots: list[tuple[float, float]] | None, now: float) -> bool:
        """Whether these fires wait: cooling down after a time limit, and every spot near
        one of the event's objects (or no spots to tell)."""
        if now >= roi.cooldown_until_s:
            return False
        if spots is None or roi.muted is None:
            return True
        return all(
            any(np.hypot(x - mx, y - my) <= self.rules.mute_um for mx, my in roi.muted)
            for x, y in spots
        )

    def _switch(
        self,
        roi: RoiState,
        fired: list[str],
        spots: list[tuple[float, float]] | None,
        now: float,
        t: int,
        frame: FrameView,
    ) -> str | None:
        r = self.rules
        if roi.mode == "gentle":
            if fired and not self._muted(roi, spots, now):
                roi.mode, roi.fast_since_s, roi.quiet, roi.ending = "fast", now, 0, False
                roi.stretch_since_s = now
                roi.spots = None if spots is None else list(spots)
                roi.triggers.append(
                    {"t": t, "frame": frame.index, "by": fired, "t_ready_ns": frame.t_ready_ns}
                )
                return "to fast"
            return None
        if fired:
            roi.spots = None if spots is None or roi.spots is None else roi.spots + spots
        if r.end_on:
            roi.quiet += roi.ending
            roi.ending = roi.ending or bool(set(fired) & set(r.end_on))
        else:
            roi.quiet = 0 if fired else roi.quiet + 1
        since = now if roi.fast_since_s is None else roi.fast_since_s
        if now - since >= r.max_fast_s:
            roi.mode, roi.cooldown_until_s = "gentle", now + r.cooldown_s
            roi.muted = roi.spots
            return "to gentle: time limit"
        over = (
            roi.ending and roi.quiet >= r.after_frames if r.end_on else roi.quiet > r.after_frames
        )
        if over:
            # its objects wait too: the daughters, splitting off the blob they left, look
            # like a fresh rounding
            roi.mode, roi.cooldown_until_s = "gentle", now + r.cooldown_s
            roi.muted = roi.spots
            return "to gentle: event over"
        return None

    def _rearm(self, roi: RoiState, now: float) -> None:
        """A fresh onset while fast: the time limit counts from now, within ``rearm_limit``
        times ``max_fast_s`` since the stretch began (a false trigger's event that a real
        one follows at the same place still sees it through)."""
        r = self.rules
        start = now if roi.stretch_since_s is None else roi.stretch_since_s
        latest = start + r.rearm_limit * r.max_fast_s - r.max_fast_s
        roi.fast_since_s = max(roi.fast_since_s or start, min(now, latest))

    def _detection_frame(self, index: dict[str, int]) -> bool:
        if index.get("c", 0) != 0:
            return False
        if not index.get("m", 0):
            return True
        return index.get("z", 0) == self.rules.fast.z_offsets_um.index(0.0)

    def _view(self, roi: RoiState, frame: FrameView, objects: ObjectTable) -> EventView:
        geometry = FrameGeometry(
            frame.stage_x_um, frame.stage_y_um, frame.width, frame.height, frame.affine
        )
        xs, ys = geometry.to_stage(objects.centroid_row, objects.centroid_col)
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        half = self.rules.roi_um / 2
        in_roi = (np.abs(xs - roi.x_um) <= half) & (np.abs(ys - roi.y_um) <= half)
        exposure = (
            self.rules.fast.channels[0][1]
            if frame.event_index.get("m", 0)
            else self.rules.gentle.exposure_ms
        )
        return EventView(objects, xs, ys, in_roi, roi.previous, exposure)

    def _acquire(self, state: EventState, p: int, t: int, due_s: float) -> Acquire:
        roi = state.positions[p]
        roi.due_s[t] = due_s
        mode: Literal["gentle", "fast"] = "fast" if roi.mode == "fast" else "gentle"
        events = self._events(mode, t, p, roi.x_um, roi.y_um)
        return Acquire(f"p{p:03d}-t{t:05d}", tuple(events), due_s=due_s)

    def _events(
        self, mode: Literal["gentle", "fast"], t: int, p: int, x: float, y: float
    ) -> list[useq.MDAEvent]:
        r = self.rules
        if mode == "gentle":
            plan = [(r.gentle.channel, r.gentle.exposure_ms, 0, 0, 0.0)]
        else:
            plan = [
                (channel, exposure, c, z, offset)
                for z, offset in enumerate(r.fast.z_offsets_um)
                for c, (channel, exposure) in enumerate(r.fast.channels)
            ]
        m = int(mode == "fast")
        return [
            useq.MDAEvent(
                x_pos=x,
                y_pos=y,
                z_pos=r.z_um + offset,
                channel=channel,
                exposure=exposure,
                index={"t": t, "p": p, "c": c, "z": z, "m": m},
            )
            for channel, exposure, c, z, offset in plan
        ]


def _truncated(view: EventView, depth: int) -> EventView | None:
    """``view`` with its chain of previous views cut after ``depth`` (0: None)."""
    if depth <= 0:
        return None
    previous = view.previous and _truncated(view.previous, depth - 1)
    return EventView(view.objects, view.x_um, view.y_um, view.in_roi, previous, view.exposure_ms)
