"""The tracking policy: link each position's objects over time and keep the tracked cell centred.

Per position: the objects of a frame go to stage µm through the frame's pixel affine (flips and
rotation included), the position's linker gives them track ids, and the followed cell's new
centre becomes the next time point's stage target. The correction is computed from what was
commanded, not from the stage position read back, with a deadband and a clip on each step
(shrimPy's dynatrack lesson). After a division the policy follows the daughter nearest the
mother's last position, and the lineage is kept. A cell lost for longer than the linker's gap
is re-acquired (the object nearest the field's centre) or its position dropped, by rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import useq

from scopeflow import MoveStage, ObjectTable

from ._geometry import FrameGeometry
from ._linking import LinkerSettings, OnlineLinker
from ._policy import Acquire, Command, Decision, Direct, FrameView

__all__ = ["PositionTrack", "TrackingPolicy", "TrackingRules", "TrackingState"]


@dataclass(frozen=True)
class TrackingRules:
    """How the policy follows cells."""

    time_points: int
    interval_s: float
    channel: str
    exposure_ms: float
    z_um: float = 0.0
    deadband_um: float = 1.0  # closer than this to the commanded centre: do not move
    max_step_um: float = 25.0  # farthest one correction moves the stage
    on_lost: Literal["reacquire", "drop"] = "reacquire"
    min_area_px: float = 20.0
    # next_event: each time point is queued at the re-centred position (several positions);
    # move_stage: one position, a time-lapse queued at the start, and the stage follows the cell
    # by direct moves between frames (the fast loop)
    recentre: Literal["next_event", "move_stage"] = "next_event"
    linker: LinkerSettings = field(default_factory=LinkerSettings)


@dataclass
class PositionTrack:
    """One position's tracker: where the stage goes next and which track it follows."""

    name: str
    x_um: float
    y_um: float
    linker: OnlineLinker
    followed: int | None = None
    lost_since: int | None = None
    dropped: bool = False
    divisions_followed: int = 0
    centring_error_um: dict[int, float] = field(default_factory=dict)
    path: dict[int, tuple[float, float]] = field(default_factory=dict)  # the followed cell
    fov_um: float | None = None
    z_um: float | None = None  # this position's focus (None: the rules' z_um)
    label_tracks: dict[int, dict[int, int]] = field(default_factory=dict)  # t -> label -> track


@dataclass
class TrackingState:
    positions: list[PositionTrack]
    decided: set[tuple[int, int]] = field(default_factory=set)

    def frame_key(self, t: int, p: int) -> str:
        return f"t{t:05d}-p{p:03d}"


class TrackingPolicy:
    """Pure apart from its linkers' bookkeeping, which lives in the state it returns."""

    def __init__(
        self,
        positions: list[tuple[str, float, float]],
        rules: TrackingRules,
        z_um: Sequence[float] | None = None,
    ) -> None:
        """``z_um``: each position's focus (e.g. found by an autofocus step before the loop);
        None: every position at ``rules.z_um``."""
        if not positions:
            raise ValueError("tracking needs at least one position")
        if z_um is not None and len(z_um) != len(positions):
            raise ValueError(f"give one z per position: {len(z_um)} for {len(positions)}")
        if rules.recentre == "move_stage" and len(positions) != 1:
            raise ValueError(
                "recentre='move_stage' follows one cell by moving the stage: give one position, "
                "or use recentre='next_event' for several"
            )
        self.positions = positions
        self.rules = rules
        self.z_um = None if z_um is None else tuple(float(z) for z in z_um)

    def initial_state(self) -> TrackingState:
        zs = self.z_um or (None,) * len(self.positions)
        return TrackingState(
            [
                PositionTrack(name, x, y, OnlineLinker(self.rules.linker), z_um=z)
                for (name, x, y), z in zip(self.positions, zs, strict=True)
            ]
        )

    def first_commands(self, state: TrackingState) -> tuple[Command, ...]:
        if self.rules.recentre == "move_stage":
            position = state.positions[0]
            z = self.rules.z_um if position.z_um is None else position.z_um
            return (
                Direct("start", MoveStage(x=position.x_um, y=position.y_um, z=z)),
                Acquire("timelapse", tuple(self._timelapse())),
            )
        return tuple(self._acquire(state, 0, p) for p in range(len(state.positions)))

    def decide(
        self, state: TrackingState, frame: FrameView, result: Any
    ) -> tuple[TrackingState, Decision]:
        t, p = frame.event_index.get("t", 0), frame.event_index.get("p", 0)
        if not 0 <= p < len(state.positions):
            raise ValueError(f"frame {frame.index} names position {p}, which this run has not")
        position = state.positions[p]
        position.fov_um = min(frame.width, frame.height) * frame.pixel_size_um
        objects = _usable(result, self.rules.min_area_px)
        geometry = FrameGeometry(
            frame.stage_x_um, frame.stage_y_um, frame.width, frame.height, frame.affine
        )
        xs, ys = geometry.to_stage(objects.centroid_row, objects.centroid_col)
        points = np.column_stack([xs, ys])
        ids = position.linker.update(t, points)
        position.label_tracks[t] = {
            int(label): int(tid) for label, tid in zip(objects.label, ids, strict=True)
        }
        followed, event = self._follow(position, t, points, ids)
        summary: dict[str, Any] = {
            "t": t,
            "p": p,
            "position": position.name,
            "objects": len(points),
            "followed": followed,
            "event": event,
        }
        if followed is not None:
            k = ids.index(followed)
            tx, ty = float(points[k, 0]), float(points[k, 1])
            error = math.hypot(tx - frame.stage_x_um, ty - frame.stage_y_um)
            position.centring_error_um[t] = error
            position.path[t] = (tx, ty)
            summary["centring_error_um"] = round(error, 3)
            position.x_um, position.y_um = self._step(position.x_um, position.y_um, tx, ty)
        summary["next_xy_um"] = (round(position.x_um, 3), round(position.y_um, 3))
        state.decided.add((t, p))
        commands: tuple[Command, ...] = ()
        if self.rules.recentre == "move_stage":
            if (position.x_um, position.y_um) != (frame.stage_x_um, frame.stage_y_um):
                move = MoveStage(x=position.x_um, y=position.y_um)
                commands = (Direct(f"t{t:05d}-move", move),)
        elif t + 1 < self.rules.time_points and not position.dropped:
            commands = (self._acquire(state, t + 1, p),)
        done = all(
            pos.dropped or (self.rules.time_points - 1, q) in state.decided
            for q, pos in enumerate(state.positions)
        )
        return state, Decision(commands, summary, done=done)

    def _follow(
        self, position: PositionTrack, t: int, points: np.ndarray, ids: list[int]
    ) -> tuple[int | None, str]:
        """The track to centre on now, and what happened to the one followed so far."""
        linker = position.linker
        if position.followed is None:
            return self._reacquire(position, t, points, ids, "acquired")
        if position.followed in ids:
            position.lost_since = None
            return position.followed, "followed"
        successors = [d for d in linker.daughters(position.followed) if d.track_id in ids]
        if successors:
            last = np.array(linker.tracks[position.followed].position())
            nearest = min(successors, key=lambda d: float(np.hypot(*(d.position() - last))))
            if len(successors) > 1:
                position.divisions_followed += 1
            position.followed = nearest.track_id
            position.lost_since = None
            return nearest.track_id, "division" if len(successors) > 1 else "gap closed"
        position.lost_since = t if position.lost_since is None else position.lost_since
        if t - position.lost_since < linker.settings.max_gap + 1:
            return None, "missed"
        if self.rules.on_lost == "drop":
            position.dropped = True
            return None, "lost: position dropped"
        return self._reacquire(position, t, points, ids, "lost: re-acquired")

    def _reacquire(
        self, position: PositionTrack, t: int, points: np.ndarray, ids: list[int], event: str
    ) -> tuple[int | None, str]:
        if not len(points):
            return None, "no object"
        d = np.hypot(points[:, 0] - position.x_um, points[:, 1] - position.y_um)
        position.followed = ids[int(np.argmin(d))]
        position.lost_since = None
        return position.followed, event

    def _step(self, x: float, y: float, tx: float, ty: float) -> tuple[float, float]:
        """From the commanded (x, y) towards the target: nothing inside the deadband, at most
        ``max_step_um`` per correction."""
        dx, dy = tx - x, ty - y
        distance = math.hypot(dx, dy)
        if distance <= self.rules.deadband_um:
            return x, y
        scale = min(1.0, self.rules.max_step_um / distance)
        return x + dx * scale, y + dy * scale

    def _timelapse(self) -> list[useq.MDAEvent]:
        """The move_stage mode's frames: no position (taken where the stage follows the cell),
        paced by the edge (``min_start_time`` from the first frame)."""
        r = self.rules
        return [
            useq.MDAEvent(
                channel=r.channel,
                exposure=r.exposure_ms,
                index={"t": t, "p": 0},
                min_start_time=t * r.interval_s,
                reset_event_timer=t == 0,
            )
            for t in range(r.time_points)
        ]

    def _acquire(self, state: TrackingState, t: int, p: int) -> Acquire:
        position = state.positions[p]
        r = self.rules
        event = useq.MDAEvent(
            x_pos=position.x_um,
            y_pos=position.y_um,
            z_pos=r.z_um if position.z_um is None else position.z_um,
            channel=r.channel,
            exposure=r.exposure_ms,
            index={"t": t, "p": p},
        )
        return Acquire(state.frame_key(t, p), (event,), due_s=t * r.interval_s)


def _usable(result: Any, min_area_px: float) -> ObjectTable:
    if not isinstance(result, ObjectTable):
        raise ValueError(f"the tracking policy needs an ObjectTable, got {type(result).__name__}")
    keep = result.area_px >= min_area_px
    if keep.all():
        return result
    return replace(
        result,
        label=result.label[keep],
        area_px=result.area_px[keep],
        centroid_row=result.centroid_row[keep],
        centroid_col=result.centroid_col[keep],
        mean_intensity=result.mean_intensity[keep],
        bbox=result.bbox[keep],
    )
