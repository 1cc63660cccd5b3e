"""Adaptive illumination: each position's light set from its cell's measured signal-to-noise.

Every position follows one cell (the object nearest the frame centre). After each frame the
policy measures that cell's SNR from the workers' object table, as a microscopist would: the
cell's mean intensity above the background, over the background's noise (both measured on
the worker next to the frame, ``tasks.inference.background_level``). The next frame's light
(exposure x intensity, "ms at 100 %") is corrected towards ``target_snr x margin``:

    light_next = light * (aim / snr) ** (1 / gamma)

from the light the policy *commanded* (not what it reads back), with a deadband (no change
while the SNR is within ``deadband`` above the aim), a clip on each step (at most
``max_step``-fold) and ``gamma`` (how SNR grows with light: 1 when read noise dominates, 0.5
when shot noise does) fitted per position from its own frames once their light differs. The
light is then split into exposure and intensity: the preferred intensity at the exposure that
gives it, the intensity moved only where the exposure hits its limits; where both are at their
limits the target is out of reach and the frame says so (``capped``). Keys are
``p<position>-t<time point>``, so a re-run sends the same command ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import useq

from scopeflow import ObjectTable

from ._policy import Acquire, Command, Decision, FrameView

__all__ = [
    "AdaptiveIlluminationPolicy",
    "IlluminationRules",
    "IlluminationState",
    "LightSetting",
    "PositionLight",
]


@dataclass(frozen=True)
class LightSetting:
    """One frame's illumination; ``light`` is exposure x intensity in ms at 100 %."""

    exposure_ms: float
    intensity_percent: float

    @property
    def light(self) -> float:
        return self.exposure_ms * self.intensity_percent / 100.0


@dataclass(frozen=True)
class IlluminationRules:
    """The target, the ranges the light may take (inside the edge's envelope) and the pace."""

    target_snr: float = 10.0
    time_points: int = 20
    interval_s: float = 1.0
    channel: str = "DAPI"
    z_um: float = 0.0
    start: LightSetting = LightSetting(10.0, 2.0)
    exposure_range_ms: tuple[float, float] = (2.0, 200.0)
    intensity_range_percent: tuple[float, float] = (0.5, 100.0)
    preferred_intensity_percent: float = 5.0
    margin: float = 1.2  # aim this far above the target: frame-to-frame noise and bleaching
    deadband: float = 0.3  # no change while the SNR is within aim .. aim x (1 + deadband)
    max_step: float = 4.0  # the light changes at most this factor per frame
    gamma: float = 0.75  # SNR ~ light ** gamma until a position's frames say otherwise
    search_radius_um: float = 15.0  # the followed cell: nearest object within this of the centre
    adapt: bool = True  # False: the start setting at every frame (the static protocol)

    def __post_init__(self) -> None:
        (e0, e1), (i0, i1) = self.exposure_range_ms, self.intensity_range_percent
        if not (0 < e0 <= e1 and 0 < i0 <= i1 <= 100):
            raise ValueError(
                f"exposure_range_ms {self.exposure_range_ms} and intensity_range_percent "
                f"{self.intensity_range_percent} must be (min, max) with 0 < min <= max "
                "(intensity at most 100)"
            )
        if not (e0 <= self.start.exposure_ms <= e1 and i0 <= self.start.intensity_percent <= i1):
            raise ValueError(
                f"the start setting ({self.start.exposure_ms:g} ms, "
                f"{self.start.intensity_percent:g} %) must lie inside the exposure and intensity "
                "ranges"
            )
        if not i0 <= self.preferred_intensity_percent <= i1:
            raise ValueError("preferred_intensity_percent must lie inside intensity_range_percent")
        if self.target_snr <= 0 or self.margin < 1 or self.max_step <= 1 or self.time_points < 1:
            raise ValueError(
                "target_snr must be > 0, margin >= 1, max_step > 1 and time_points >= 1"
            )

    @property
    def max_light(self) -> float:
        return self.exposure_range_ms[1] * self.intensity_range_percent[1] / 100.0

    @property
    def min_light(self) -> float:
        return self.exposure_range_ms[0] * self.intensity_range_percent[0] / 100.0

    def setting_for(self, light: float) -> LightSetting:
        """The exposure and intensity giving ``light`` (clipped to the ranges): the preferred
        intensity, the exposure that gives the light at it, then the intensity moved where the
        exposure is at a limit."""
        (e0, e1), (i0, i1) = self.exposure_range_ms, self.intensity_range_percent
        light = min(max(light, self.min_light), self.max_light)
        exposure = min(max(light * 100.0 / self.preferred_intensity_percent, e0), e1)
        intensity = min(max(light * 100.0 / exposure, i0), i1)
        return LightSetting(round(exposure, 3), round(intensity, 3))


@dataclass
class PositionLight:
    """One position: the light it was given, the SNR it reached, and how it ended."""

    name: str
    x_um: float
    y_um: float
    setting: LightSetting
    history: list[tuple[float, float]] = field(default_factory=list)  # (light, snr) per frame
    frames: int = 0
    capped: int = 0
    stop_reason: str | None = None


@dataclass
class IlluminationState:
    positions: list[PositionLight]


class AdaptiveIlluminationPolicy:
    """One frame per position and time point; each frame sets its position's next light."""

    def __init__(self, positions: list[tuple[str, float, float]], rules: IlluminationRules):
        if not positions:
            raise ValueError("adaptive illumination needs at least one position")
        self.positions = positions
        self.rules = rules

    def initial_state(self) -> IlluminationState:
        return IlluminationState(
            [PositionLight(n, x, y, self.rules.start) for n, x, y in self.positions]
        )

    def first_commands(self, state: IlluminationState) -> tuple[Command, ...]:
        return tuple(self._acquire(state, p, 0) for p in range(len(state.positions)))

    def event(self, p: int, t: int, setting: LightSetting) -> useq.MDAEvent:
        """The one event of position ``p`` at time point ``t`` with ``setting``."""
        r = self.rules
        name, x, y = self.positions[p]
        return useq.MDAEvent(
            x_pos=x,
            y_pos=y,
            z_pos=r.z_um,
            channel=r.channel,
            exposure=setting.exposure_ms,
            properties=[("Illumination", "Intensity", setting.intensity_percent)],
            index={"t": t, "p": p},
            pos_name=name,
        )

    def decide(
        self, state: IlluminationState, frame: FrameView, result: Any
    ) -> tuple[IlluminationState, Decision]:
        index = frame.event_index
        t, p = int(index.get("t", 0)), int(index.get("p", 0))
        if not 0 <= p < len(state.positions):
            raise ValueError(f"frame {frame.index} names position {p}, which this run has not")
        if not isinstance(result, ObjectTable):
            raise ValueError(f"adaptive illumination needs an ObjectTable, not {type(result)}")
        pos = state.positions[p]
        used = pos.setting
        pos.frames += 1
        snr = self._snr(pos, frame, result)
        summary: dict[str, Any] = {
            "t": t,
            "p": p,
            "position": pos.name,
            "exposure_ms": used.exposure_ms,
            "intensity_percent": used.intensity_percent,
            "light": round(used.light, 5),
            "snr": None if snr is None else round(snr, 2),
        }
        if snr is not None:
            pos.history.append((used.light, snr))
        next_setting, why = self._next(pos, used, snr)
        summary["next_exposure_ms"] = next_setting.exposure_ms
        summary["next_intensity_percent"] = next_setting.intensity_percent
        summary["why"] = why
        if why == "capped":
            pos.capped += 1
        pos.setting = next_setting
        if t + 1 >= self.rules.time_points:
            return state, Decision(summary=summary)
        return state, Decision((self._acquire(state, p, t + 1),), summary)

    # ------------------------------------------------------------------------------ internals

    def _snr(self, pos: PositionLight, frame: FrameView, objects: ObjectTable) -> float | None:
        """The followed cell's SNR, or None where no cell is near the centre or the frame
        has no background to measure."""
        noise = objects.extra.get("background_noise")
        level = objects.extra.get("background_mean")
        if not len(objects) or not noise or level is None:
            return None
        h, w = objects.shape
        distance_px = np.hypot(
            objects.centroid_row - (h - 1) / 2, objects.centroid_col - (w - 1) / 2
        )
        k = int(np.argmin(distance_px))
        if distance_px[k] * frame.pixel_size_um > self.rules.search_radius_um:
            return None
        return float((objects.mean_intensity[k] - level) / noise)

    def _gamma(self, pos: PositionLight) -> float:
        """How SNR grows with light at this position: the slope of log SNR on log light over
        its last frames, once their light spans a factor 1.5; else the rules' guess."""
        recent = [(lt, s) for lt, s in pos.history[-6:] if lt > 0 and s > 0]
        lights = np.log([lt for lt, _ in recent]) if recent else np.zeros(0)
        if len(recent) < 2 or np.ptp(lights) < math.log(1.5):
            return self.rules.gamma
        slope = float(np.polyfit(lights, np.log([s for _, s in recent]), 1)[0])
        return min(max(slope, 0.5), 1.0)

    def _next(
        self, pos: PositionLight, used: LightSetting, snr: float | None
    ) -> tuple[LightSetting, str]:
        r = self.rules
        if not r.adapt:
            return used, "fixed"
        if snr is None or snr <= 0:
            light = used.light * r.max_step  # nothing seen: more light, one clipped step
            why = "no cell found: brighter"
        else:
            aim = r.target_snr * r.margin
            if aim <= snr <= aim * (1.0 + r.deadband):
                return used, "within deadband"
            factor = (aim / snr) ** (1.0 / self._gamma(pos))
            factor = min(max(factor, 1.0 / r.max_step), r.max_step)
            light = used.light * factor
            why = "brighter" if factor > 1 else "dimmer"
        setting = r.setting_for(light)
        if light > r.max_light * (1 + 1e-9):
            why = "capped"
        return setting, why

    def _acquire(self, state: IlluminationState, p: int, t: int) -> Acquire:
        setting = state.positions[p].setting
        due = t * self.rules.interval_s
        return Acquire(f"p{p:03d}-t{t:05d}", (self.event(p, t, setting),), due_s=due)
