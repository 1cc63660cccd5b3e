"""What a live policy is: a pure function from (state, one frame's analysis) to commands.

The closed-loop core (``tasks.live``) feeds a policy one frame's small analysis result at a
time, in frame order; the policy answers with its next state and the commands to send. It
touches no hardware and no network, so it is unit-tested without a microscope, and a run can be
replayed from its decision log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import useq

from scopeflow import DirectCommand, FrameHeader

__all__ = ["Acquire", "Command", "Decision", "Direct", "FrameView", "Policy"]

StateT = TypeVar("StateT")


@dataclass(frozen=True)
class Acquire:
    """Queue acquisition events at the edge, at ``due_s`` seconds after the loop started
    (0: now). ``key`` names the step (e.g. ``"t0004-p01"``): with the run and phase it makes
    the command id, so a retried or re-run loop sends the same id and the edge runs it once."""

    key: str
    events: tuple[useq.MDAEvent, ...]
    due_s: float = 0.0


@dataclass(frozen=True)
class Direct:
    """One direct command (stage, channel, exposure, illumination, ...), sent now."""

    key: str
    command: DirectCommand


Command = Acquire | Direct


@dataclass(frozen=True)
class FrameView:
    """What a policy knows of one frame besides the analysis: where and when it was taken."""

    index: int
    command_id: str | None
    stage_x_um: float
    stage_y_um: float
    stage_z_um: float
    width: int
    height: int
    pixel_size_um: float
    affine: tuple[float, float, float, float, float, float]
    event_index: dict[str, int]
    t_ready_ns: int

    @classmethod
    def from_header(cls, header: FrameHeader) -> FrameView:
        """What the policy sees of a frame the edge sent (an edge that sends no pixel affine:
        camera axes along the stage axes)."""
        px = header.pixel_size_um
        return cls(
            index=header.index,
            command_id=header.command_id,
            stage_x_um=header.stage.x,
            stage_y_um=header.stage.y,
            stage_z_um=header.stage.z,
            width=header.shape[-1],
            height=header.shape[-2],
            pixel_size_um=px,
            affine=header.pixel_affine or (px, 0.0, 0.0, 0.0, px, 0.0),
            event_index=dict(header.event.get("index", {})),
            t_ready_ns=header.t_ready_ns,
        )


@dataclass(frozen=True)
class Decision:
    """A policy's answer for one frame: the commands to send and a short, JSON-able summary
    of why (kept in the decision log)."""

    commands: tuple[Command, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)
    done: bool = False  # the policy needs no more frames: the loop ends after this one
    decided_ns: int = 0  # set by the loop: when the policy answered (time.time_ns)


class Policy(Protocol[StateT]):
    """``decide(state, frame, result) -> (state, Decision)``; pure: same inputs, same output.

    ``result`` is the analyzer's small result for the frame (e.g. an ObjectTable). A policy
    raises ValueError for a result it cannot use; the loop logs it as that frame's decision
    and goes on.
    """

    def initial_state(self) -> StateT: ...

    def first_commands(self, state: StateT) -> tuple[Command, ...]: ...

    def decide(self, state: StateT, frame: FrameView, result: Any) -> tuple[StateT, Decision]: ...
