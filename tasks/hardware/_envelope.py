"""The safety envelope: what the edge agent lets a remote command do to the microscope.

Checked at the edge, before anything moves or is queued. A command outside it raises
`EnvelopeViolation` naming the limit and the value; the whole command is refused.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import useq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scopeflow import ConfigurationError, EnvelopeViolation

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
        100_000.0, ge=0, description="Total light dose allowed in this edge session"
    )
    channel_power_mw: Mapping[str, float] = Field(
        default_factory=lambda: {"BF": 0.0, "DAPI": 20.0, "GFP": 30.0},
        description="Light power at the sample at 100 % intensity; a channel not listed counts 0",
    )
    allowed_actions: frozenset[str] = Field(
        frozenset({"acquire_image", "hardware_autofocus"}),
        description="useq action types remote events may carry",
    )
    allowed_properties: Mapping[str, frozenset[str]] = Field(
        default_factory=lambda: {"Illumination": frozenset({"Intensity"})},
        description="device -> properties that event.properties may set",
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> SafetyEnvelope:
        for name in ("x_limits_um", "y_limits_um", "z_limits_um"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: minimum {low} is above maximum {high}")
        return self

    def check_position(self, x: float | None, y: float | None, z: float | None, where: str) -> None:
        for axis, value, (low, high), name in (
            ("X", x, self.x_limits_um, "x_limits_um"),
            ("Y", y, self.y_limits_um, "y_limits_um"),
            ("Z", z, self.z_limits_um, "z_limits_um"),
        ):
            if value is not None and not low <= value <= high:
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
        _check_at_most(
            exposure_ms, self.max_exposure_ms, "max_exposure_ms", "exposure", "ms", where
        )

    def check_intensity(self, intensity: float, where: str) -> None:
        _check_at_most(
            intensity, self.max_intensity_percent, "max_intensity_percent", "intensity", "%", where
        )

    def dose_mj(self, channel: str | None, exposure_ms: float, intensity: float | None) -> float:
        """Light dose of one exposure: power at the sample x intensity x exposure time."""
        if channel is None:
            return 0.0
        power = self.channel_power_mw.get(channel, 0.0)
        fraction = 1.0 if intensity is None else intensity / 100.0
        return power * fraction * exposure_ms / 1000.0

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

    def check_events(
        self, events: Iterable[useq.MDAEvent], context: HardwareContext
    ) -> list[float]:
        """Check every event; return the light dose each would use. Raises on the first bad one.

        Events inherit channel, exposure and intensity from the events before them, starting
        from ``context`` (the microscope's current settings).
        """
        doses: list[float] = []
        channel, exposure, intensity = context.channel, context.exposure_ms, context.intensity
        for i, event in enumerate(events):
            where = f"event {i}"
            self.check_position(event.x_pos, event.y_pos, event.z_pos, where)
            action = event.action.type if event.action is not None else "acquire_image"
            _check_allowed(action, self.allowed_actions, "allowed_actions", "action", where)
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
                if (device, prop) == context.intensity_property:
                    intensity = float(value)
                    self.check_intensity(intensity, where)
            acquires = action == "acquire_image"
            doses.append(self.dose_mj(channel, exposure, intensity) if acquires else 0.0)
        return doses


def _check_allowed(value: str, allowed: frozenset[str], limit: str, what: str, where: str) -> None:
    if value not in allowed:
        raise EnvelopeViolation(
            f"{where}: {what} {value!r} is not in the envelope's {limit} {sorted(allowed)}",
            limit=limit,
            value=value,
        )


def _check_at_most(
    value: float, maximum: float, limit: str, what: str, unit: str, where: str
) -> None:
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
