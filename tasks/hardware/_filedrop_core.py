"""The file-drop microscope: pure-Python unicore devices whose every action is a file for the
vendor macro, so the edge agent (envelope, command log, journal, stream) drives it unchanged.

Within a queued event (a `command_scope` with an event number) the stage, focus and channel
only record their targets, and the camera's snap sends one ``acquire`` carrying all of them: one
round trip per image. A direct command (no event) sends its own ``move``, ``channel`` or
``objective`` at once. The position, channel and objective the core reports are the macro's, from
its last reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymmcore_plus import FocusDirection
from pymmcore_plus.experimental.unicore import (
    SimpleCameraDevice,
    StageDevice,
    StateDevice,
    UniMMCore,
    XYStageDevice,
    pymm_property,
)
from pymmcore_plus.mda import MDAEngine, MDARunner

from scopeflow import ConfigurationError, EdgeServerSettings, HardwareError

from ._command_scope import current_command
from ._envelope import SafetyEnvelope
from ._filedrop_bridge import FileDropBridge
from ._filedrop_protocol import DropHello, DropReply

__all__ = ["FileDropCore", "build_filedrop_core", "filedrop_envelope"]

LABELS = {"camera": "Camera", "xy": "XY", "focus": "Z", "light": "Illumination"}


@dataclass
class _Rig:
    """What the macro last reported, and the targets a queued event set but did not send yet."""

    bridge: FileDropBridge
    hello: DropHello
    x: float
    y: float
    z: float
    channel: str
    objective: str
    intensity: float = 50.0
    target: dict[str, Any] | None = None

    def deferred(self) -> bool:
        scope = current_command()
        return scope is not None and scope.event is not None

    def aim(self, **fields: Any) -> None:
        self.target = (self.target or {}) | fields

    def send(self, op: str, **fields: Any) -> DropReply:
        reply = self.bridge.send(op, **fields)
        self.take(reply)
        return reply

    def take(self, reply: DropReply) -> None:
        for what, value, known in (
            ("channel", reply.channel, self.hello.channels),
            ("objective", reply.objective, list(self.hello.objectives)),
        ):
            if value is not None and value not in known:
                raise HardwareError(
                    f"reply {reply.seq} reports {what} {value!r}, which hello.json does not "
                    f"announce ({', '.join(known)}): the macro must use the announced names"
                )
        self.x = self.x if reply.x is None else reply.x
        self.y = self.y if reply.y is None else reply.y
        self.z = self.z if reply.z is None else reply.z
        self.channel = reply.channel or self.channel
        self.objective = reply.objective or self.objective

    def aimed(self, key: str, now: Any) -> Any:
        return (self.target or {}).get(key, now)


class _XY(XYStageDevice):
    def __init__(self, rig: _Rig) -> None:
        super().__init__()
        self._rig = rig

    def get_position_um(self) -> tuple[float, float]:
        return self._rig.aimed("x", self._rig.x), self._rig.aimed("y", self._rig.y)

    def set_position_um(self, x: float, y: float) -> None:
        if self._rig.deferred():
            self._rig.aim(x=float(x), y=float(y))
        else:
            self._rig.send("move", x=float(x), y=float(y))

    def home(self) -> None:
        raise NotImplementedError("the file-drop protocol has no homing: home in the vendor UI")

    def stop(self) -> None:
        self._rig.bridge.request_stop()

    def set_origin_x(self) -> None:
        raise NotImplementedError("set the stage origin in the vendor software")

    def set_origin_y(self) -> None:
        raise NotImplementedError("set the stage origin in the vendor software")


class _Focus(StageDevice):
    def __init__(self, rig: _Rig) -> None:
        super().__init__()
        self._rig = rig

    def get_position_um(self) -> float:
        return float(self._rig.aimed("z", self._rig.z))

    def set_position_um(self, val: float) -> None:
        if self._rig.deferred():
            self._rig.aim(z=float(val))
        else:
            self._rig.send("move", z=float(val))

    def get_focus_direction(self) -> FocusDirection:
        return FocusDirection.TowardSample

    def home(self) -> None:
        raise NotImplementedError("the file-drop protocol has no homing: home in the vendor UI")

    def stop(self) -> None:
        self._rig.bridge.request_stop()

    def set_origin(self) -> None:
        raise NotImplementedError("set the focus origin in the vendor software")


class _Light(StateDevice):
    """Channels (one state each) and the illumination intensity sent with each acquire."""

    def __init__(self, rig: _Rig) -> None:
        self._names = list(rig.hello.channels)
        super().__init__(dict(enumerate(self._names)))
        self._rig = rig

    def get_state(self) -> int:
        return self._names.index(self._rig.aimed("channel", self._rig.channel))

    def set_state(self, position: int) -> None:
        channel = self._names[int(position)]
        if self._rig.deferred():
            self._rig.aim(channel=channel)
        elif channel != self._rig.channel:
            self._rig.send("channel", channel=channel)

    @pymm_property(limits=(0.0, 100.0), name="Intensity")
    def intensity(self) -> float:
        """Light source power, percent (sent with each acquire)."""
        return self._rig.intensity

    @intensity.setter
    def intensity(self, value: float) -> None:
        self._rig.intensity = float(value)


class _Objectives(StateDevice):
    def __init__(self, rig: _Rig) -> None:
        self._names = list(rig.hello.objectives)
        super().__init__(dict(enumerate(self._names)))
        self._rig = rig

    def get_state(self) -> int:
        return self._names.index(self._rig.objective)

    def set_state(self, position: int) -> None:
        objective = self._names[int(position)]
        if objective != self._rig.objective:
            self._rig.send("objective", objective=objective)


class _Camera(SimpleCameraDevice):
    """Each snap is one ``acquire`` with the event's targets; the image comes back as a file."""

    def __init__(self, rig: _Rig) -> None:
        super().__init__()
        self._rig = rig
        self._exposure = 10.0
        self.set_property_limits("Exposure", (0.001, 60_000.0))

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        self._exposure = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        camera = self._rig.hello.camera
        return camera.height, camera.width

    def dtype(self) -> np.dtype:
        return np.dtype(self._rig.hello.camera.dtype)

    def snap(self, buffer: np.ndarray) -> Mapping:
        rig = self._rig
        try:
            reply = rig.send(
                "acquire",
                x=rig.aimed("x", rig.x),
                y=rig.aimed("y", rig.y),
                z=rig.aimed("z", rig.z),
                channel=rig.aimed("channel", rig.channel),
                objective=rig.objective,
                exposure_ms=self._exposure,
                intensity=rig.intensity,
            )
        finally:
            rig.target = None
        buffer[...] = rig.bridge.read_image(reply, buffer.shape, buffer.dtype)
        return {"FileDropImage": str(reply.image), "FileDropTime": f"{reply.time or 0:.6f}"}


class _Runner(MDARunner):
    """Cancelling the run (a Stop) also tells the macro, which may abandon a long acquisition."""

    def __init__(self, bridge: FileDropBridge) -> None:
        super().__init__()
        self._bridge = bridge

    def cancel(self) -> None:
        super().cancel()
        self._bridge.request_stop()


class FileDropCore(UniMMCore):
    """A UniMMCore whose pixel size follows the objective the macro reported."""

    def __init__(self, rig: _Rig) -> None:
        super().__init__(mm_path=str(Path(__file__).parent))
        self._rig = rig
        self._mda_runner = _Runner(rig.bridge)
        self._mda_runner.set_engine(MDAEngine(self))

    @property
    def bridge(self) -> FileDropBridge:
        return self._rig.bridge

    def getPixelSizeUm(self, cached: bool = False) -> float:
        return self._rig.hello.objectives[self._rig.objective].pixel_size_um

    def getPixelSizeAffine(  # type: ignore[override]
        self, cached: bool = False
    ) -> tuple[float, float, float, float, float, float]:
        objective = self._rig.hello.objectives[self._rig.objective]
        if objective.affine is not None:
            return objective.affine
        px = objective.pixel_size_um
        return (px, 0.0, 0.0, 0.0, px, 0.0)


def build_filedrop_core(
    drop_dir: Path,
    settings: EdgeServerSettings,
    *,
    hello_timeout_s: float = 60.0,
    reply_timeout_s: float = 60.0,
) -> tuple[FileDropCore, DropHello]:
    """The core over the macro playing the microscope in ``drop_dir`` (waits for its hello)."""
    device, prop = settings.intensity_property
    if prop != "Intensity":
        raise ConfigurationError(
            f"the file-drop driver's intensity property is <device>.Intensity; set the edge's "
            f"intensity_property to ({device!r}, 'Intensity'), not ({device!r}, {prop!r})"
        )
    bridge = FileDropBridge(drop_dir, reply_timeout_s=reply_timeout_s)
    hello = bridge.wait_hello(hello_timeout_s)
    x, y, z = hello.position
    rig = _Rig(bridge, hello, x, y, z, hello.channel, hello.objective)
    core = FileDropCore(rig)
    devices = {
        "camera": _Camera(rig),
        "xy": _XY(rig),
        "focus": _Focus(rig),
        "light": _Light(rig),
        "objective": _Objectives(rig),
    }
    labels = LABELS | {"light": device, "objective": "Objective"}
    for key, dev in devices.items():
        core.loadPyDevice(labels[key], dev)
    core.initializeAllDevices()
    core.setCameraDevice(labels["camera"])
    core.setXYStageDevice(labels["xy"])
    core.setFocusDevice(labels["focus"])
    core.setAutoShutter(False)
    core.defineConfigGroup(settings.channel_group)
    for channel in hello.channels:
        core.defineConfig(settings.channel_group, channel, device, "Label", channel)
    core.setChannelGroup(settings.channel_group)
    core.defineConfigGroup(settings.objective_group)
    for objective in hello.objectives:
        core.defineConfig(
            settings.objective_group, objective, labels["objective"], "Label", objective
        )
    return core, hello


def filedrop_envelope(hello: DropHello) -> SafetyEnvelope:
    """The default envelope of a file-drop microscope: its announced travel, channels and
    objectives (an envelope file replaces it)."""
    return SafetyEnvelope(
        x_limits_um=hello.stage.x,
        y_limits_um=hello.stage.y,
        z_limits_um=hello.stage.z,
        allowed_channels=frozenset(hello.channels),
        allowed_objectives=frozenset(hello.objectives),
    )
