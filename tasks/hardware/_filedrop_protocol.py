"""The file-drop protocol: the files a vendor macro and the edge exchange in the drop folder.

Layout of the drop folder (``docs/edge-protocol.md`` has the full specification)::

    DROP/hello.json              macro -> edge, once at start: camera, objectives, channels, stage
    DROP/commands/000042.json    edge -> macro: one operation (move, objective, acquire, stop)
    DROP/replies/000042.json     macro -> edge: the answer to command 42, written last
    DROP/images/000042.tif       macro -> edge: the image an ``acquire`` answered with

Every file is written whole under a temporary name (``*.tmp``) in the same folder, then renamed:
a reader never sees half a file. A reply is written after its image, so a reply that exists names
a complete image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scopeflow import ConfigurationError, HardwareError

__all__ = [
    "DROP_PROTOCOL",
    "DropCommand",
    "DropHello",
    "DropLayout",
    "DropObjective",
    "DropReply",
    "read_drop_json",
    "write_atomic",
]

DROP_PROTOCOL = 1

M = TypeVar("M", bound=BaseModel)

Op = Literal["move", "objective", "channel", "acquire", "stop"]


class DropObjective(BaseModel):
    """One objective the macro can switch to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pixel_size_um: float = Field(gt=0, description="Image pixel size at the sample, µm")
    affine: tuple[float, float, float, float, float, float] | None = Field(
        None,
        description="Pixel -> stage affine (Micro-Manager order); unset: camera axes = stage axes",
    )


class DropCamera(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    dtype: Literal["uint8", "uint16"] = "uint16"


class DropStage(BaseModel):
    """Travel (min, max) per axis, µm: the edge's envelope defaults to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]


class DropHello(BaseModel):
    """``hello.json``: what the macro drives, written once when it starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: int = Field(description="File-drop protocol version; the edge accepts only its own")
    name: str = Field("vendor macro", description="Who plays the macro (shown in the edge's log)")
    camera: DropCamera
    objectives: dict[str, DropObjective] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    stage: DropStage
    position: tuple[float, float, float] = Field(description="Stage x, y, z now, µm")
    objective: str
    channel: str


class DropCommand(BaseModel):
    """``commands/NNNNNN.json``: one operation for the macro, named by its sequence number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: int = DROP_PROTOCOL
    seq: int = Field(ge=1, description="Sequence number, also the file's name; never reused")
    op: Op
    command_id: str | None = Field(description="The edge command this operation belongs to")
    event: int | None = Field(None, description="The event's number in its command (acquire)")
    x: float | None = None
    y: float | None = None
    z: float | None = None
    objective: str | None = None
    channel: str | None = None
    exposure_ms: float | None = None
    intensity: float | None = None


class DropReply(BaseModel):
    """``replies/NNNNNN.json``: the macro's answer; for ``acquire``, the image's sidecar."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a macro may add its own fields

    protocol: int = DROP_PROTOCOL
    seq: int
    command_id: str | None
    ok: bool
    error: str | None = Field(None, description="Why the operation failed (ok false)")
    stopped: bool = Field(False, description="The operation was abandoned for a stop")
    image: str | None = Field(None, description="acquire: the image, relative to the drop folder")
    x: float | None = None
    y: float | None = None
    z: float | None = None
    objective: str | None = None
    channel: str | None = None
    exposure_ms: float | None = None
    time: float | None = Field(None, description="acquire: when the image was taken (Unix s)")


class DropLayout:
    """The drop folder's paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hello = root / "hello.json"
        self.commands = root / "commands"
        self.replies = root / "replies"
        self.images = root / "images"

    def create(self) -> DropLayout:
        for folder in (self.commands, self.replies, self.images):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def command(self, seq: int) -> Path:
        return self.commands / f"{seq:06d}.json"

    def reply(self, seq: int) -> Path:
        return self.replies / f"{seq:06d}.json"

    def last_seq(self) -> int:
        """The highest sequence number used in this folder (0 when none): a restarted edge goes
        on after it, so a name is never reused."""
        numbers = [
            int(p.stem)
            for folder in (self.commands, self.replies)
            for p in folder.glob("*.json")
            if p.stem.isdigit()
        ]
        return max(numbers, default=0)


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON under a temporary name, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_drop_json(path: Path, model: type[M]) -> M:
    """A drop file as ``model``; an error that names the file and what is wrong in it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HardwareError(
            f"cannot read {path}: {exc}; the macro must write it whole (temporary name, then "
            "rename) as JSON"
        ) from exc
    try:
        found = model.model_validate(raw)
    except ValidationError as exc:
        raise HardwareError(
            f"{path} is not a valid {model.__name__}: {exc}; see docs/edge-protocol.md"
        ) from exc
    if getattr(found, "protocol", DROP_PROTOCOL) != DROP_PROTOCOL:
        raise ConfigurationError(
            f"{path} speaks file-drop protocol {found.protocol}, this edge speaks "  # type: ignore[attr-defined]
            f"{DROP_PROTOCOL}: update the macro or the edge so both match"
        )
    return found
