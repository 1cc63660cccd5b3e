"""The safety envelope: what the edge agent lets a remote command do to the microscope.

Checked at the edge, before anything moves or is queued. A command outside it raises
`EnvelopeViolation` naming the limit and the value; the whole command is refused. Every number
must be finite (NaN passes no comparison, so it would pass a plain range check), and the stage
position an event is taken at counts, also when the event names no position (it is taken where
the stage is). The light dose is estimated here for the queue; it is charged when the frame is
taken, from the settings then in force (`tasks.hardware._guard`).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import useq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scopeflow import ConfigurationError, EnvelopeViolation, device_action

from ._device_envelope import DeviceLimits

__all__ = ["HardwareContext", "SafetyEnvelope", "load_envelope"]


class SafetyEnvelope(BaseModel):
    """Limits enforced at the edge. Units: µm, ms, percent, mW, mJ."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x_limits_um: tuple[float, float] = Field((0.0, 10_000.0), description="Stage X (min, max)")
    y_limits_um: tuple[float, float] = Field((0.0, 10_000.0), description="Stage Y (min, max)")
    z_limits_um: tuple[float, float] = Field((-200.0, 200.0), description="Focus Z (min, max)")
    allowed_channels: frozenset[str] = Field(frozenset({"BF", "DAPI", "GFP"}))
    allowed_objectives: frozenset[str] = Field(frozenset({"10x", "20x", "40x"}))
    max_exposure_ms: float = Field(2_000.0, gt=0)
    max_intensity_percent: float = Field(100.0, ge=0, le=100)
    light_dose_budget_mj: float = Field(
        100_000.0,
        ge=0,
        description="Total light dose allowed for this data dir (used dose kept in dose.json)",
    )
    channel_power_mw: Mapping[str, float] = Field(
        default_factory=lambda: {"BF": 0.0, "DAPI": 20.0, "GFP": 30.0},
        description="Light power at the sample at 100 % intensity; every allowed channel "
        "needs one (0 for a channel that puts no light on the sample), else the envelope is "
        "refused",
    )
    allowed_actions: frozenset[str] = Field(
        frozenset({"acquire_image", "hardware_autofocus"}),
        description="useq action types remote events may carry; 'slm_image' lets events "
        "carry an SLM pattern (off by default: a pattern is light the dose cannot account for), "
        "'roi' a camera region of interest (off by default: the camera allocates any size)",
    )
    autofocus_offset_limits: tuple[float, float] = Field(
        (-100.0, 100.0),
        description="hardware_autofocus motor offset (min, max), in the autofocus device's units",
    )
    max_autofocus_retries: int = Field(5, ge=0, description="hardware_autofocus max_retries")
    allow_keep_shutter_open: bool = Field(
        False,
        description="Let events keep the shutter open between frames (light the dose budget "
        "does not count)",
    )
    allowed_properties: Mapping[str, frozenset[str]] = Field(
        default_factory=lambda: {"Illumination": frozenset({"Intensity"})},
        description="device -> properties that event.properties may set",
    )

    devices: DeviceLimits = Field(
        default_factory=DeviceLimits,
        description="External devices (syringe pumps, DMD/SLM stimulation) that events may "
        "drive with a useq CustomAction ('custom' must be in allowed_actions too), each with "
        "its limits; a device not listed here is refused",
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> SafetyEnvelope:
        for name in ("x_limits_um", "y_limits_um", "z_limits_um", "autofocus_offset_limits"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError(f"{name}: limits must be finite numbers, not {(low, high)}")
            if low > high:
                raise ValueError(f"{name}: minimum {low} is above maximum {high}")
        for name in ("max_exposure_ms", "light_dose_budget_mj"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        return self

    @model_validator(mode="after")
    def _every_channel_has_a_power(self) -> SafetyEnvelope:
        """Fail closed: a channel without a power value would illuminate for free."""
        missing = sorted(self.allowed_channels - set(self.channel_power_mw))
        if missing:
            raise ValueError(
                f"allowed channels {missing} have no power value: add each to "
                "channel_power_mw (mW at the sample at 100 % intensity; 0 for a channel that "
                "puts no light on the sample), or remove it from allowed_channels"
            )
        bad = {c: p for c, p in self.channel_power_mw.items() if not (math.isfinite(p) and p >= 0)}
        if bad:
            raise ValueError(f"channel_power_mw {bad}: powers must be finite and >= 0")
        return self

    def inside(self, x: float, y: float, z: float) -> bool:
        """Whether a stage position is inside the XY/Z limits (NaN never is)."""
        return all(
            low <= value <= high
            for value, (low, high) in (
                (x, self.x_limits_um),
                (y, self.y_limits_um),
                (z, self.z_limits_um),
            )
        )

    def check_position(self, x: float | None, y: float | None, z: float | None, where: str) -> None:
        for axis, value, (low, high), name in (
            ("X", x, self.x_limits_um, "x_limits_um"),
            ("Y", y, self.y_limits_um, "y_limits_um"),
            ("Z", z, self.z_limits_um, "z_limits_um"),
        ):
            if value is None:
                continue
            _check_finite(value, name, f"stage {axis}", where)
            if not low <= value <= high:
                raise EnvelopeViolation(
                    f"{where}: stage {axis}={value:g} µm is outside the envelope's {name} "
                    f"[{low:g}, {high:g}]; choose a position inside it or widen {name} in the "
                    "envelope file",
                    limit=name,
                    value=value,
                )

    def check_channel(self, channel: str, where: str) -> None:
        _check_allowed(channel, self.allowed_channels, "allowed_channels", "channel", where)

    def check_objective(self, objective: str, where: str) -> None:
        _check_allowed(objective, self.allowed_objectives, "allowed_objectives", "objective", where)

    def check_exposure(self, exposure_ms: float, where: str) -> None:
        _check_at_least_zero(exposure_ms, "max_exposure_ms", "exposure", where)
        _check_at_most(
            exposure_ms, self.max_exposure_ms, "max_exposure_ms", "exposure", "ms", where
        )

    def check_intensity(self, intensity: float, where: str) -> None:
        _check_at_least_zero(intensity, "max_intensity_percent", "intensity", where)
        _check_at_most(
            intensity, self.max_intensity_percent, "max_intensity_percent", "intensity", "%", where
        )

    def power_mw(self, channel: str | None, where: str) -> float:
        """Power at the sample at 100 % of ``channel``; fails closed for a channel the envelope
        gives no power (the light source's state is unknown: count it as the brightest)."""
        if channel is None or channel not in self.channel_power_mw:
            raise EnvelopeViolation(
                f"{where}: the channel in force ({channel!r}) has no power value in the "
                "envelope's channel_power_mw, so its light dose cannot be counted; select a "
                f"channel of {sorted(self.channel_power_mw)} first (set_channel or the event's "
                "channel), or add it to channel_power_mw",
                limit="channel_power_mw",
                value=channel,
            )
        return self.channel_power_mw[channel]

    def exposure_dose(
        self,
        channel: str | None,
        exposure_ms: float,
        intensity: float | None,
        where: str,
        frames: int = 1,
    ) -> tuple[float, float]:
        """(power at 100 % in mW, light dose in mJ) of ``frames`` exposures with these settings:
        power x intensity x exposure time. An unknown intensity counts as 100 %; an unknown
        channel, or a value outside the envelope, is refused."""
        power = self.power_mw(channel, where)
        self.check_exposure(exposure_ms, where)
        if intensity is not None:
            self.check_intensity(intensity, where)
        fraction = 1.0 if intensity is None else intensity / 100.0
        return power, power * fraction * exposure_ms / 1000.0 * frames

    def dose_mj(self, channel: str | None, exposure_ms: float, intensity: float | None) -> float:
        """Light dose of one exposure (see `exposure_dose`)."""
        return self.exposure_dose(channel, exposure_ms, intensity, "light dose")[1]

    def check_move(
        self,
        stage: tuple[float, float, float],
        x: float | None,
        y: float | None,
        z: float | None,
        where: str,
    ) -> tuple[float, float, float]:
        """Where a move from ``stage`` ends (an axis given as None stays), refused unless that
        whole position is inside: a stage outside in Y cannot wander in X."""
        self.check_position(x, y, z, where)
        target = (stage[0] if x is None else x, stage[1] if y is None else y)
        target3 = (*target, stage[2] if z is None else z)
        if (x, y, z) != target3:
            where = f"{where} (the stage stays where it is on axes not given)"
            self.check_position(*target3, where)
        return target3

    def check_budget(self, used_mj: float, reserved_mj: float, extra_mj: float) -> None:
        if used_mj + reserved_mj + extra_mj > self.light_dose_budget_mj:
            raise EnvelopeViolation(
                f"light dose: this command needs {extra_mj:.3g} mJ but only "
                f"{self.light_dose_budget_mj - used_mj - reserved_mj:.3g} mJ of the envelope's "
                f"light_dose_budget_mj {self.light_dose_budget_mj:g} is left ({used_mj:.3g} used, "
                f"{reserved_mj:.3g} reserved by queued events); lower exposure or intensity, or "
                "start a new session with a larger budget",
                limit="light_dose_budget_mj",
                value=round(extra_mj, 6),
            )

    def check_autofocus(self, action: useq.HardwareAutofocus, where: str) -> None:
        offset = action.autofocus_motor_offset
        if offset is not None:
            _check_finite(offset, "autofocus_offset_limits", "autofocus offset", where)
            low, high = self.autofocus_offset_limits
            if not low <= offset <= high:
                raise EnvelopeViolation(
                    f"{where}: autofocus motor offset {offset:g} is outside the envelope's "
                    f"autofocus_offset_limits [{low:g}, {high:g}]; choose an offset inside it "
                    "or widen autofocus_offset_limits in the envelope file",
                    limit="autofocus_offset_limits",
                    value=offset,
                )
        if action.max_retries > self.max_autofocus_retries:
            raise EnvelopeViolation(
                f"{where}: autofocus max_retries {action.max_retries} exceeds the envelope's "
                f"max_autofocus_retries {self.max_autofocus_retries}; ask for fewer retries",
                limit="max_autofocus_retries",
                value=action.max_retries,
            )

    def check_events(
        self, events: Iterable[useq.MDAEvent], context: HardwareContext
    ) -> list[float]:
        """Check every event; return the light dose each would use. Raises on the first bad one.

        Events inherit channel, exposure, intensity and stage position from the events before
        them, starting from ``context`` (the microscope's current settings and position): an
        event that names no position is taken where the stage is then, which must be inside.
        """
        doses: list[float] = []
        channel, exposure, intensity = context.channel, context.exposure_ms, context.intensity
        stage = context.stage
        for i, event in enumerate(events):
            where = f"event {i}"
            if stage is None:
                self.check_position(event.x_pos, event.y_pos, event.z_pos, where)
            else:
                stage = self.check_move(stage, event.x_pos, event.y_pos, event.z_pos, where)
            action = event.action.type if event.action is not None else "acquire_image"
            _check_allowed(action, self.allowed_actions, "allowed_actions", "action", where)
            if isinstance(event.action, useq.HardwareAutofocus):
                self.check_autofocus(event.action, where)
            if event.slm_image is not None:
                _check_allowed(
                    "slm_image", self.allowed_actions, "allowed_actions", "action", where
                )
            if event.roi is not None:  # a camera ROI of any size: the camera allocates it
                _check_allowed("roi", self.allowed_actions, "allowed_actions", "action", where)
            if event.keep_shutter_open and not self.allow_keep_shutter_open:
                raise EnvelopeViolation(
                    f"{where}: keep_shutter_open lights the sample between frames, which the "
                    "light dose budget cannot count; leave it unset or set "
                    "allow_keep_shutter_open in the envelope file",
                    limit="allow_keep_shutter_open",
                    value=True,
                )
            if event.channel is not None:
                if event.channel.group != context.channel_group:
                    raise EnvelopeViolation(
                        f"{where}: channel group {event.channel.group!r} is not the edge's "
                        f"channel group {context.channel_group!r}",
                        limit="allowed_channels",
                        value=event.channel.group,
                    )
                self.check_channel(event.channel.config, where)
                channel = event.channel.config
            if event.exposure is not None:
                self.check_exposure(event.exposure, where)
                exposure = event.exposure
            for device, prop, value in event.properties or ():
                allowed = self.allowed_properties.get(device, frozenset())
                if prop not in allowed:
                    raise EnvelopeViolation(
                        f"{where}: setting {device}.{prop} is not in the envelope's "
                        "allowed_properties",
                        limit="allowed_properties",
                        value=f"{device}.{prop}",
                    )
                if isinstance(value, float):
                    _check_finite(value, "allowed_properties", f"{device}.{prop}", where)
                if (device, prop) == context.intensity_property:
                    intensity = _number(value, f"{where}: {device}.{prop}")
                    self.check_intensity(intensity, where)
            if isinstance(event.action, useq.CustomAction):  # a pump run, a stimulation
                xy = None if stage is None else (stage[0], stage[1])
                payload = device_action(event.action)
                doses.append(self.devices.check(payload, xy, context.field_um, where))
                continue
            acquires = action == "acquire_image"
            doses.append(self.dose_mj(channel, exposure, intensity) if acquires else 0.0)
        return doses


def _check_allowed(value: str, allowed: frozenset[str], limit: str, what: str, where: str) -> None:
    if value not in allowed:
        raise EnvelopeViolation(
            f"{where}: {what} {value!r} is not in the envelope's {limit} {sorted(allowed)}; "
            f"use one of them, or add it to {limit} in the envelope file",
            limit=limit,
            value=value,
        )


def _check_finite(value: float, limit: str, what: str, where: str) -> None:
    if not math.isfinite(value):
        raise EnvelopeViolation(
            f"{where}: {what} is {value!r}; send a finite number",
            limit=limit,
            value=str(value),  # JSON has no NaN or infinity
        )


def _check_at_least_zero(value: float, limit: str, what: str, where: str) -> None:
    _check_finite(value, limit, what, where)
    if value < 0:
        raise EnvelopeViolation(
            f"{where}: {what} {value:g} is negative; send a value of 0 or more",
            limit=limit,
            value=value,
        )


def _number(value: object, where: str) -> float:
    """A property value that must be a number (a string of one is accepted, as Micro-Manager
    properties are strings)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EnvelopeViolation(
            f"{where} must be a number, not {value!r}; send a number",
            limit="allowed_properties",
            value=repr(value)[:80],
        ) from None
    return number


def _check_at_most(
    value: float, maximum: float, limit: str, what: str, unit: str, where: str
) -> None:
    _check_finite(value, limit, what, where)
    if value > maximum:
        raise EnvelopeViolation(
            f"{where}: {what} {value:g} {unit} exceeds the envelope's {limit} {maximum:g}; "
            f"lower the {what} or raise {limit}",
            limit=limit,
            value=value,
        )


@dataclass(frozen=True)
class HardwareContext:
    """Microscope settings that events inherit when they do not set them."""

    channel: str | None
    exposure_ms: float
    intensity: float | None
    channel_group: str = "Channel"
    intensity_property: tuple[str, str] = ("Illumination", "Intensity")
    stage: tuple[float, float, float] | None = None  # where events without a position are taken
    field_um: tuple[float, float] | None = None  # the camera's field of view (width, height)


def load_envelope(path: Path | None) -> SafetyEnvelope:
    """Read an envelope from YAML or TOML; the simulator defaults when ``path`` is None."""
    if path is None:
        return SafetyEnvelope()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read envelope file {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"envelope file {path} is not valid: {exc}") from exc
    try:
        return SafetyEnvelope.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigurationError(f"envelope file {path}: {exc}") from exc
