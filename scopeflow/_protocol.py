"""The edge protocol: what crosses the wire between an edge agent and its clients.

Small, versioned and vendor-neutral: commands and state are JSON; acquisition speaks useq-schema
(`MDAEvent`, `MDASequence`); frames travel as one binary message each (see `scopeflow._framing`).
Every command carries a ``command_id``; repeating it never repeats its effect.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import useq
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PROTOCOL_VERSION",
    "CommandAck",
    "CommandId",
    "CommandRequest",
    "DirectCommand",
    "DoseAccount",
    "EdgeState",
    "FrameHeader",
    "FrameTag",
    "MoveStage",
    "Pause",
    "Refusal",
    "Resume",
    "SetChannel",
    "SetExposure",
    "SetIllumination",
    "SetObjective",
    "StagePosition",
    "Stop",
    "SubmitEvents",
    "SubmitSequence",
    "new_command_id",
]

PROTOCOL_VERSION = 1

CommandId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="Caller-chosen id; a repeat of an id already seen has no further effect.",
    ),
]


def new_command_id(prefix: str = "cmd") -> str:
    """A fresh, unique command id (``prefix-<32 hex>``), for callers that need no determinism."""
    return f"{prefix}-{uuid.uuid4().hex}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StagePosition(_Frozen):
    """Stage position in micrometres."""

    x: float
    y: float
    z: float


FrameTag = Annotated[
    str,
    Field(
        max_length=128,
        pattern=r"^[A-Za-z0-9._:\-]*$",
        description="Caller's label, copied into the header of every frame the events produce.",
    ),
]


class SubmitEvents(_Frozen):
    """Append acquisition events to the edge's queue (they run after what is queued).

    Every frame the events produce names ``command_id`` (and ``tag``) in its header, so a
    client finds its own frames by id, whatever other clients queue in between.
    """

    command_id: CommandId
    events: list[useq.MDAEvent] = Field(min_length=1, max_length=1_000_000)
    tag: FrameTag | None = None


class SubmitSequence(_Frozen):
    """Append a whole useq `MDASequence` to the edge's queue (frames name ``command_id``)."""

    command_id: CommandId
    sequence: useq.MDASequence
    tag: FrameTag | None = None


class MoveStage(_Frozen):
    """Move the stage to an absolute position (µm); an axis left out stays where it is."""

    type: Literal["move_stage"] = "move_stage"
    x: float | None = None
    y: float | None = None
    z: float | None = None


class SetChannel(_Frozen):
    """Switch to a preset of the channel group (e.g. "DAPI")."""

    type: Literal["set_channel"] = "set_channel"
    channel: str


class SetExposure(_Frozen):
    """Set the camera exposure in milliseconds."""

    type: Literal["set_exposure"] = "set_exposure"
    exposure_ms: float = Field(gt=0)


class SetIllumination(_Frozen):
    """Set the illumination intensity in percent of the source's maximum."""

    type: Literal["set_illumination"] = "set_illumination"
    intensity: float = Field(ge=0, le=100)


class SetObjective(_Frozen):
    """Switch the objective (a preset of the objective group, e.g. "40x")."""

    type: Literal["set_objective"] = "set_objective"
    objective: str


class Pause(_Frozen):
    """Pause the running acquisition at the next event boundary."""

    type: Literal["pause"] = "pause"


class Resume(_Frozen):
    """Resume a paused acquisition."""

    type: Literal["resume"] = "resume"


class Stop(_Frozen):
    """Stop the running acquisition and drop every queued event."""

    type: Literal["stop"] = "stop"


DirectCommand = Annotated[
    MoveStage | SetChannel | SetExposure | SetIllumination | SetObjective | Pause | Resume | Stop,
    Field(discriminator="type"),
]


class CommandRequest(_Frozen):
    """A direct command (stage, channel, exposure, illumination, objective, pause/resume/stop)."""

    command_id: CommandId
    command: DirectCommand


class CommandAck(_Frozen):
    """The edge's answer to an accepted command."""

    command_id: str
    repeat: bool = Field(description="True when this command id was seen before: nothing was done")
    queued_events: int = 0
    queue_depth: int = 0
    detail: str = ""


class Refusal(_Frozen):
    """Why a command was refused (HTTP 422 body ``detail``)."""

    error: Literal["envelope_violation", "invalid_command", "hardware_error", "conflict"]
    message: str
    limit: str | None = None
    value: Any = None


class DoseAccount(_Frozen):
    """Light dose in millijoules: used by acquired frames, reserved by queued events, budget."""

    used_mj: float
    reserved_mj: float
    budget_mj: float


class EdgeState(_Frozen):
    """What `GET /v1/state` returns."""

    protocol: int = PROTOCOL_VERSION
    simulated: bool
    stage: StagePosition
    channel: str | None
    objective: str | None
    pixel_size_um: float
    pixel_affine: tuple[float, float, float, float, float, float] = Field(
        description="Micro-Manager pixel-size affine (a, b, tx, c, d, ty): camera orientation"
    )
    image_width: int
    image_height: int
    exposure_ms: float
    intensity: float | None
    run_state: Literal["idle", "acquiring", "paused"]
    queue_depth: int
    frames_acquired: int
    frames_journaled: int
    light_dose: DoseAccount
    journal: str
    last_error: str | None = None


class FrameHeader(_Frozen):
    """The JSON header sent ahead of each frame's pixels."""

    index: int = Field(ge=0, description="Global frame index in this edge session")
    event: dict[str, Any] = Field(description="The useq MDAEvent that produced the frame (JSON)")
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    stage: StagePosition
    pixel_size_um: float
    channel: str | None
    exposure_ms: float
    t_ready_ns: int = Field(description="Wall clock (time.time_ns) when the camera frame was ready")
    t_journaled_ns: int = Field(description="Wall clock when the frame was in the journal")
    checksum: str = Field(description="'xxh3_64:<hex>' of the pixel bytes (C order)")
    shm_slot: int | None = Field(
        None,
        description="Shared-memory stream only: the pixels are in this ring slot, not inline",
    )
    command_id: str | None = Field(
        None, description="The command (submitted events or sequence) that produced the frame"
    )
    tag: str | None = Field(None, description="The tag given with that command, if any")
    pixel_affine: tuple[float, float, float, float, float, float] | None = Field(
        None, description="Pixel-size affine (a, b, tx, c, d, ty) in force for this frame"
    )
    sample_time_s: float | None = Field(
        None,
        description="Simulated microscope only: the sample's clock when the frame was exposed "
        "(the time to ask /v1/truth about)",
    )
