"""The edge protocol: what crosses the wire between an edge agent and its clients.

Small, versioned and vendor-neutral: commands and state are JSON; acquisition speaks useq-schema
(`MDAEvent`, `MDASequence`); frames travel as one binary message each (see `scopeflow._framing`).
Every command carries a ``command_id``; repeating it never repeats its effect.

Acquisition outcomes travel in order with the frames, as *notices* (`EventFailed`,
`CommandDone`): a client that asks for them learns when a command's events have all run and
which failed, so it never waits for a frame that will not come.

The TCP stream port speaks one JSON line each way before anything else (`StreamHello`, then
`StreamHelloAnswer`); the ``protocol`` both announce is `PROTOCOL_VERSION` and each side refuses
another one (`protocol_mismatch`).
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from typing import Annotated, Any, Literal

import useq
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ._access import LeaseInfo
from ._plan_cost import plate_cost
from ._useq_strict import UnknownField, unknown_useq_fields

__all__ = [
    "DEFAULT_ERROR_POLICY",
    "PROTOCOL_VERSION",
    "ChannelAnswer",
    "CommandAck",
    "CommandDone",
    "CommandId",
    "CommandRequest",
    "CommandStatus",
    "DirectCommand",
    "DoseAccount",
    "EdgeState",
    "ErrorPolicy",
    "EventFailed",
    "FrameHeader",
    "FrameTag",
    "MoveStage",
    "Notice",
    "Pause",
    "Refusal",
    "Resume",
    "SetChannel",
    "SetExposure",
    "SetIllumination",
    "SetObjective",
    "ShmRingInfo",
    "StagePosition",
    "Stop",
    "StreamHello",
    "StreamHelloAnswer",
    "SubmitEvents",
    "SubmitSequence",
    "new_command_id",
    "parse_notice",
    "protocol_mismatch",
]

PROTOCOL_VERSION = 1  # the major version: a client and an edge of different majors refuse

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


_POLICY_TEXT = re.compile(r"^(?:(skip|abort)|retry:(\d+)(?::(skip|abort))?)$")


class ErrorPolicy(_Frozen):
    """What the edge does when an event fails: a device error while setting it up (stage,
    focus, channel, exposure, a property) or a snap that raises or gives no image.

    It tries the event again up to ``retries`` times, then ``then``: ``skip`` the event (the
    command goes on with its next event) or ``abort`` the command (its remaining queued events
    are dropped and their reserved light dose released). Either way the failure reaches the
    stream as an `EventFailed` notice naming the device and the fix.

    Written as text too: ``"skip"``, ``"abort"`` (no retry), ``"retry:N"`` (N retries, then
    abort), ``"retry:N:skip"``. Per event in ``MDAEvent.metadata["on_error"]``, per command in
    ``SubmitEvents.on_error`` / ``SubmitSequence.on_error``; the event's wins.
    """

    retries: int = Field(1, ge=0, le=10, description="Attempts after the first one")
    then: Literal["skip", "abort"] = Field("abort", description="After the last attempt")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _POLICY_TEXT.match(value.strip())
        if match is None:
            raise ValueError(
                f"on_error {value!r} is not a policy: use 'skip', 'abort', 'retry:N' or "
                "'retry:N:skip' (N retries, then abort or skip)"
            )
        plain, retries, then = match.groups()
        if plain:
            return {"retries": 0, "then": plain}
        return {"retries": int(retries), "then": then or "abort"}

    def text(self) -> str:
        """The policy as text (``"retry:1:abort"``)."""
        return f"retry:{self.retries}:{self.then}" if self.retries else self.then

    @classmethod
    def for_event(cls, event: useq.MDAEvent, default: ErrorPolicy | None) -> ErrorPolicy:
        """The event's own policy (``metadata["on_error"]``), else ``default``, else
        `DEFAULT_ERROR_POLICY`."""
        own = (event.metadata or {}).get("on_error")
        if own is not None:
            return own if isinstance(own, ErrorPolicy) else cls.model_validate(own)
        return default or DEFAULT_ERROR_POLICY


DEFAULT_ERROR_POLICY = ErrorPolicy()
"""Retry once, then abort the rest of the command: one retry clears a transient glitch (a
camera read-out timeout, a serial hiccup); a failure that repeats would leave the rest of the
command (a z-stack, a tile row) imaged under wrong conditions, so that command stops (only it:
other commands in the queue go on) and the flow decides."""


def _check_event_policies(events: list[useq.MDAEvent]) -> None:
    for i, event in enumerate(events):
        own = (event.metadata or {}).get("on_error")
        if own is not None:
            try:
                ErrorPolicy.model_validate(own)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"event {i}: metadata.on_error: {reason}") from None


_MAX_GRID_CELLS = 1_000_000
_ARITHMETIC = (TypeError, ArithmeticError, MemoryError, RecursionError)


def _bounded_layouts(data: Any, depth: int = 0) -> None:
    """Refuse a plate or grid of more than a million cells before useq lays it out in arrays
    (it allocates every cell while validating)."""
    if depth > 32:
        raise ValueError("the request is nested more than 32 levels deep; flatten it")
    if isinstance(data, dict):
        rows, columns = _cell_count(data.get("rows")), _cell_count(data.get("columns"))
        if rows is not None and columns is not None and rows * columns > _MAX_GRID_CELLS:
            raise ValueError(
                f"a layout of {rows} x {columns} cells is over {_MAX_GRID_CELLS:,}; use a "
                "smaller plate or grid"
            )
        for value in data.values():
            _bounded_layouts(value, depth + 1)
        if "plate" in data and "a1_center_xy" in data:
            _bounded_plate(data)
    elif isinstance(data, list):
        for value in data:
            _bounded_layouts(value, depth + 1)


_MAX_PLATE_LAYOUT_STEPS = 3_000_000


def _bounded_plate(data: dict[str, Any]) -> None:
    """Refuse a well plate plan whose positions would take useq seconds to lay out: it does
    so while validating the sequence (a pydantic Position per well and point, ~100 µs each),
    before the edge's limit on events applies."""
    try:
        plan = useq.WellPlatePlan.model_validate(copy.deepcopy(data))
    except (ValidationError, *_ARITHMETIC, ValueError):
        return  # useq says what is wrong when it validates the sequence
    cost = plate_cost(plan, _MAX_PLATE_LAYOUT_STEPS)
    if cost.steps > _MAX_PLATE_LAYOUT_STEPS:
        raise ValueError(
            f"the well plate plan lays out {cost.events:,} positions ({cost.worst}), more "
            f"than useq lays out in a few seconds (~{_MAX_PLATE_LAYOUT_STEPS // 100:,}); "
            "select fewer wells (selected_wells) or points per well, or split the plate "
            "into several sequences"
        )


def _cell_count(value: Any) -> int | None:
    """A count of rows or columns as useq will read it (lax: ``13598.0`` and ``"13598"`` are
    13598), None when it is not one (useq refuses it itself)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    return value if isinstance(value, int) else None


def _validated_safely(data: Any, handler: Any, what: str) -> Any:
    """Validate through ``handler``; an error useq raises while computing (a division by zero,
    an allocation too large, a wrong type deep inside) is a refusal (422), not a crash. A key
    that useq would ignore, at any depth of the ``what`` field, is refused with its place and
    the closest known name."""
    _bounded_layouts(data)
    try:
        result = handler(data)
    except _ARITHMETIC as exc:
        raise ValueError(
            f"the {what} cannot be computed ({type(exc).__name__}: {str(exc)[:200]}); check its "
            "plans and values"
        ) from None
    if isinstance(data, dict) and what in data:
        unknown = unknown_useq_fields(data[what], getattr(result, what), (what,))
        if unknown:
            raise _unknown_fields_error(type(result).__name__, unknown)
    return result


_MAX_REPORTED = 20


def _unknown_fields_error(title: str, unknown: list[UnknownField]) -> ValidationError:
    """One error per unknown field, each at its own place (``loc``), with the fix."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("unknown_field", "{message}", {"message": u.message()}),
                loc=(*u.path, u.key),
                input=u.key,
            )
            for u in unknown[:_MAX_REPORTED]
        ],
    )


class SubmitEvents(_Frozen):
    """Append acquisition events to the edge's queue (they run after what is queued).

    Every frame the events produce names ``command_id`` (and ``tag``) in its header, so a
    client finds its own frames by id, whatever other clients queue in between. When every
    event has run (or failed, or was dropped) the stream carries a `CommandDone` notice.
    """

    command_id: CommandId
    events: list[useq.MDAEvent] = Field(min_length=1, max_length=1_000_000)
    tag: FrameTag | None = None
    on_error: ErrorPolicy | None = Field(
        None, description="Failure policy of these events (default: retry once, then abort)"
    )

    @model_validator(mode="after")
    def _event_policies(self) -> SubmitEvents:
        _check_event_policies(self.events)
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _safely(cls, data: Any, handler: Any) -> Any:
        return _validated_safely(data, handler, "events")


class SubmitSequence(_Frozen):
    """Append a whole useq `MDASequence` to the edge's queue (frames name ``command_id``)."""

    command_id: CommandId
    sequence: useq.MDASequence
    tag: FrameTag | None = None
    on_error: ErrorPolicy | None = Field(
        None, description="Failure policy of the sequence's events (default: retry once, abort)"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _safely(cls, data: Any, handler: Any) -> Any:
        return _validated_safely(data, handler, "sequence")


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
    stream_from: int | None = Field(
        None,
        description="Queued events: every frame and notice of this command comes at or after "
        "this stream position (a client streams from here to find them)",
    )
    work: CommandStatus | None = Field(
        None,
        description="A repeated id of a submitted command: what became of its events so far "
        "(run, failed, not run after an edge crash), so a retry never mistakes lost work for "
        "accepted work",
    )


class Refusal(_Frozen):
    """Why a command was refused (HTTP 422 body ``detail``; ``unauthorized`` 401,
    ``forbidden`` 403 and ``leased`` 423 come from the edge's access control, ``lease`` naming
    who holds the microscope)."""

    error: Literal[
        "envelope_violation",
        "invalid_command",
        "hardware_error",
        "conflict",
        "unauthorized",
        "forbidden",
        "leased",
        "too_large",
    ]
    message: str
    limit: str | None = None
    value: Any = None
    lease: LeaseInfo | None = None


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
    intensity: float | None = Field(
        None, description="Illumination intensity (%) in force when the frame was taken"
    )
    power_mw: float | None = Field(
        None, description="The channel's power at the sample at 100 % (the envelope's value)"
    )
    dose_mj: float | None = Field(
        None, description="Light dose charged for the exposure that produced this frame"
    )

    @classmethod
    def from_journal(
        cls, index: int, meta: dict[str, Any], *, t_journaled_ns: int | None = None
    ) -> FrameHeader:
        """Frame ``index``'s header from the metadata the edge journaled with it (an older
        journal lacks the newer optional fields); ``t_journaled_ns`` defaults to the hand-off."""
        keys = cls.model_fields.keys() - {"index", "t_journaled_ns", "shm_slot"}
        return cls(
            index=index,
            t_journaled_ns=meta["t_handoff_ns"] if t_journaled_ns is None else t_journaled_ns,
            **{key: meta[key] for key in keys if key in meta},
        )


# notices: acquisition outcomes, in order with the frames -------------------------------------

_POSITION = Field(
    ge=0,
    description="Stream position: the notice comes after frame position-1 and before frame "
    "position (a stream resumed with from=N carries every notice with position >= N)",
)


class EventFailed(_Frozen):
    """An event failed after its retries; ``action`` says what the policy did about it."""

    type: Literal["event_failed"] = "event_failed"
    position: int = _POSITION
    command_id: str | None
    tag: str | None = None
    event_number: int = Field(ge=0, description="0-based place of the event in its command")
    event: dict[str, Any] = Field(description="The useq MDAEvent (JSON)")
    step: Literal["setup", "snap", "run"] = Field(
        description="setup: moving/configuring devices; snap: the exposure; run: the runner"
    )
    device: str | None = Field(description="The device that failed, when known")
    error: str
    fix: str
    attempts: int = Field(ge=1)
    policy: str = Field(description="The policy applied, as text (e.g. 'retry:1:abort')")
    action: Literal["skipped", "aborted"] = Field(
        description="skipped: the command went on; aborted: its remaining events were dropped"
    )
    t_ns: int = Field(description="Wall clock (time.time_ns) of the failure")


class CommandDone(_Frozen):
    """Every event of a submitted command has run, failed or been dropped."""

    type: Literal["command_done"] = "command_done"
    position: int = _POSITION
    command_id: str
    tag: str | None = None
    outcome: Literal["completed", "partial", "aborted", "stopped"] = Field(
        description="completed: no event failed; partial: some failed and were skipped; "
        "aborted: an event failed under 'abort'; stopped: a stop, a shutdown or a crashed run "
        "dropped events"
    )
    events: int = Field(description="Events the command queued")
    frames: int = Field(description="Frames its events produced")
    failed: int = Field(description="Events that failed after their retries")
    dropped: int = Field(description="Events never run (after an abort or a stop)")
    t_ns: int


Notice = Annotated[EventFailed | CommandDone, Field(discriminator="type")]
_NOTICE = TypeAdapter(Notice)


def parse_notice(data: str | bytes) -> EventFailed | CommandDone:
    """A notice from its JSON."""
    return _NOTICE.validate_json(data)


class CommandStatus(_Frozen):
    """What ``GET /v1/commands/{command_id}`` returns for a submitted command (of this edge
    session, or of an earlier one on the same data dir: ``session`` says which)."""

    command_id: str
    tag: str | None
    state: Literal["queued", "done", "interrupted"] = Field(
        description="queued: events still to run; done: every event ran, failed or was "
        "dropped (see ``done``); interrupted: the edge stopped without a clean shutdown "
        "(a crash, kill -9, power loss) before running ``not_run`` of its events: they were "
        "not run and never will be (submit them again under a new command id)"
    )
    events: int
    stream_from: int = Field(description="Stream position in the command's ``session``")
    failures: list[EventFailed]
    done: CommandDone | None = None
    ran: int | None = Field(
        None, description="Events that ran with their frames journaled (interrupted commands)"
    )
    not_run: int = Field(0, description="Events lost to an edge crash: accepted, never run")
    session: str | None = Field(None, description="The edge session that accepted the command")


CommandAck.model_rebuild()


# the TCP stream port's handshake --------------------------------------------------------------


class _Lenient(BaseModel):
    """A handshake message: fields added by a later minor release are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class StreamHello(_Lenient):
    """The first line a client sends on the stream port (one JSON object and ``\\n``).

    ``{"token": T, "from": N}`` streams frames N, N+1, ...; ``"shm": true`` asks for pixels
    through the shared-memory ring (same host); ``"notices": true`` adds the `Notice` messages;
    ``"commands": true`` opens a command channel instead (one `CommandRequest` per line, one
    `ChannelAnswer` per line). ``protocol`` is the client's `PROTOCOL_VERSION` (absent: 1).
    """

    token: str = ""
    start: int = Field(0, ge=0, alias="from")
    shm: bool = False
    notices: bool = False
    commands: bool = False
    protocol: int | None = None
    holder: str | None = None  # the lease holder a command channel speaks for

    def line(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_defaults=True).encode() + b"\n"


class ShmRingInfo(_Lenient):
    """The edge's shared-memory ring, for a client to attach."""

    name: str
    slots: int
    slot_bytes: int


class StreamHelloAnswer(_Lenient):
    """The edge's answer line: ``{"ok": true, "protocol": 1}`` (plus ``shm`` and ``notices``
    when granted), or ``{"ok": false, "protocol": 1, "error": "..."}``."""

    ok: bool
    protocol: int | None = None  # absent only from edges older than the version check
    error: str | None = None
    shm: ShmRingInfo | None = None
    notices: bool | None = None

    def line(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode() + b"\n"


class ChannelAnswer(_Lenient):
    """One answer line of the command channel: the ack, or the HTTP status and refusal body
    ``POST /v1/commands`` would give."""

    ok: bool
    ack: CommandAck | None = None
    status: int | None = None
    detail: Refusal | None = None

    def line(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode() + b"\n"


def protocol_mismatch(edge: int | None, client: int | None, *, by: str) -> str | None:
    """Why an edge speaking protocol ``edge`` and a client speaking ``client`` cannot talk
    (None: they can; an absent version is 1, what every edge and client spoke before the
    check). ``by`` names who refuses, for the message."""
    edge, client = edge or 1, client or 1
    if edge == client:
        return None
    return (
        f"{by} refused: the edge speaks scopeflow protocol {edge}, the client protocol "
        f"{client}; install scopeflow versions of the same protocol on the client and the edge "
        "(upgrade the older one)"
    )
