"""Typed parameters of the event-triggered flow (loadable from YAML with
``scopeflow run event-triggered``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeflow import ComputeProfile, ConfigurationError
from tasks.compute import get_profile
from tasks.decisions import (
    AlwaysDetector,
    DivisionDetector,
    EventDetector,
    EventRules,
    FastProtocol,
    GentleProtocol,
    RoundingDetector,
)
from tasks.inference import BackendConfig

from ._edge_params import MicroscopeConnection
from ._tracking_params import TrackedPosition

__all__ = ["ChannelExposure", "EventTriggeredParams", "FastSettings", "GentleSettings"]


BUILT_IN = ("rounding", "division", "always")


class GentleSettings(BaseModel):
    """Watching: one channel, a short exposure, a slow rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str = "DAPI"
    exposure_ms: float = Field(10.0, gt=0)
    interval_s: float = Field(4.0, gt=0, description="Wall-clock seconds between time points")


class ChannelExposure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str
    exposure_ms: float = Field(gt=0)


class FastSettings(BaseModel):
    """Imaging an event: every channel at every z offset, at a high rate. The first channel
    at offset 0 is what the detectors see."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: list[ChannelExposure] = Field(
        default_factory=lambda: [
            ChannelExposure(channel="DAPI", exposure_ms=50.0),
            ChannelExposure(channel="GFP", exposure_ms=50.0),
        ],
        min_length=1,
    )
    z_offsets_um: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    interval_s: float = Field(1.0, gt=0, description="Wall-clock seconds between time points")


class EventTriggeredParams(MicroscopeConnection):
    """Watch positions gently; image each detected event fast; go back when it is over."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positions: list[TrackedPosition] = Field(min_length=1, max_length=96)
    objective: str = Field("20x", description="Objective preset (must be in the envelope)")
    z_um: float = 0.0
    duration_s: float = Field(60.0, gt=0, le=7 * 86_400, description="Wall-clock run length")
    gentle: GentleSettings = Field(default_factory=GentleSettings)
    fast: FastSettings = Field(default_factory=FastSettings)
    roi_um: float = Field(40.0, gt=0, description="Side of the square watched at each position")
    after_frames: int = Field(1, ge=0, description="Fast time points kept after an event ends")
    max_fast_s: float = Field(10.0, gt=0, description="Longest fast stretch per event")
    cooldown_s: float = Field(
        8.0, ge=0, description="The objects of an event that ended wait this long to trigger again"
    )
    rearm_limit: float = Field(
        2.0,
        ge=1,
        description="A fresh onset while fast restarts max_fast_s, up to this many times "
        "max_fast_s per fast stretch (1: never)",
    )
    detectors: list[str] = Field(
        default_factory=lambda: ["rounding", "division"],
        min_length=1,
        description="Built-in 'rounding' / 'division' ('always': every frame, the always-fast "
        "protocol for comparisons), or 'package.module:factory' for your own (a callable "
        "returning an object with `name` and `detect(view) -> bool`)",
    )
    end_on: list[str] = Field(
        default_factory=lambda: ["division"],
        description="Detectors whose firing ends an event (then `after_frames` more); empty: "
        "an event ends when every detector has been silent for `after_frames` time points",
    )
    model: str = Field("classical", description="Segmentation model on the workers")
    model_options: dict = Field(default_factory=lambda: {"working_radius_px": 4.0})
    backend: BackendConfig | None = Field(
        default_factory=BackendConfig,
        description="Where the model runs (Ray actors / Dask workers) unless `profile` is set; "
        "None (and no profile): in this process",
    )
    profile: str | None = Field(None, description="Compute profile for the model's workers")
    deadline_ms: float | None = Field(
        800.0, gt=0, description="Frame ready -> result; later results fall back to the local model"
    )
    fallback_model: str | None = Field("classical", description="Local model for late frames")
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Give a crashed run's id to resume it: no command already run is repeated",
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    output_dir: Path = Path("scopeflow-data")

    @model_validator(mode="after")
    def _protocols_make_sense(self) -> EventTriggeredParams:
        self.rules()  # raises ValueError (shown as a validation error) with the fix
        if all(d in BUILT_IN for d in self.detectors):
            _check_end_on(self.end_on, set(self.detectors), ValueError)
        return self

    def rules(self) -> EventRules:
        return EventRules(
            duration_s=self.duration_s,
            gentle=GentleProtocol(
                self.gentle.channel, self.gentle.exposure_ms, self.gentle.interval_s
            ),
            fast=FastProtocol(
                tuple((c.channel, c.exposure_ms) for c in self.fast.channels),
                tuple(self.fast.z_offsets_um),
                self.fast.interval_s,
            ),
            roi_um=self.roi_um,
            z_um=self.z_um,
            after_frames=self.after_frames,
            max_fast_s=self.max_fast_s,
            cooldown_s=self.cooldown_s,
            end_on=tuple(self.end_on),
            rearm_limit=self.rearm_limit,
        )

    def event_detectors(self) -> tuple[EventDetector, ...]:
        """The detectors by name; ConfigurationError naming the fix for one that cannot load."""
        rounding = RoundingDetector()
        out: list[EventDetector] = []
        for name in self.detectors:
            if name == "rounding":
                out.append(rounding)
            elif name == "division":
                out.append(DivisionDetector(rounding))
            elif name == "always":
                out.append(AlwaysDetector())
            else:
                out.append(_load_detector(name))
        _check_end_on(self.end_on, {d.name for d in out}, ConfigurationError)
        return tuple(out)

    def compute_profile(self) -> ComputeProfile | None:
        return None if self.profile is None else get_profile(self.profile)


def _check_end_on(end_on: list[str], names: set[str], error: type[Exception]) -> None:
    if unknown := [n for n in end_on if n not in names]:
        raise error(
            f"end_on names {unknown}, which are not among the run's detectors "
            f"({', '.join(sorted(names))}); name a detector the run uses or add it to detectors"
        )


def _load_detector(spec: str) -> EventDetector:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"detector {spec!r}: give 'rounding', 'division' or 'package.module:factory'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"detector {spec!r} cannot be loaded ({exc}); install its package where the flow "
            "runs or fix the name"
        ) from exc
    detector = factory()
    if not isinstance(detector, EventDetector):
        raise ConfigurationError(
            f"detector {spec!r} returned {type(detector).__name__}, which has no `name` and "
            "`detect(view) -> bool`"
        )
    return detector
