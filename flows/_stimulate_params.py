"""Typed parameters of the stimulate-on-event flow: the event-triggered flow's, plus what the
external devices do on an event (loadable from YAML with ``scopeflow run stimulate-on-event``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeflow import PumpRun
from tasks.decisions import StimulationPlan

from ._event_params import EventTriggeredParams

__all__ = ["PerfusionSettings", "StimulateOnEventParams", "StimulationSettings"]


class StimulationSettings(BaseModel):
    """The pattern fired on the cell(s) of each new event."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    device: str = Field("DMD", description="Patterning device (DMD/SLM) label on the edge")
    spot_radius_um: float = Field(6.0, gt=0, description="Radius of the spot on each cell, µm")
    intensity: float = Field(50.0, ge=0, le=100, description="Its light source, percent")
    duration_ms: float = Field(500.0, gt=0, description="How long the pattern is lit, ms")


class PerfusionSettings(BaseModel):
    """One pump run once ``after_events`` events were seen, or at ``at_s`` seconds into the
    watch (e.g. add a drug or a fixative); give one of the two."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    device: str = Field("Pump", description="Syringe pump label on the edge")
    reservoir: str = Field("drug", description="Reservoir (syringe) to draw from")
    volume_ul: float = Field(150.0, gt=0)
    flow_ul_per_min: float = Field(600.0, gt=0)
    after_events: int | None = Field(None, ge=1, description="Events seen before the pump runs")
    at_s: float | None = Field(None, ge=0, description="Or: seconds into the watch it runs at")

    @model_validator(mode="after")
    def _one_trigger(self) -> PerfusionSettings:
        if (self.after_events is None) == (self.at_s is None):
            raise ValueError(
                "perfusion needs one trigger: after_events (the pump runs once that many events "
                "were seen) or at_s (seconds into the watch), not both or neither"
            )
        return self

    def run(self) -> PumpRun:
        return PumpRun(
            device=self.device,
            reservoir=self.reservoir,
            volume_ul=self.volume_ul,
            flow_ul_per_min=self.flow_ul_per_min,
        )


class StimulateOnEventParams(EventTriggeredParams):
    """Watch positions gently; on each event stimulate the cell and image it fast; perfuse
    once enough events were seen."""

    stimulation: StimulationSettings = Field(default_factory=StimulationSettings)
    perfusion: PerfusionSettings | None = Field(
        None, description="A pump run after some events; None: no perfusion"
    )

    def plan(self) -> StimulationPlan:
        s, p = self.stimulation, self.perfusion
        return StimulationPlan(
            device=s.device,
            spot_radius_um=s.spot_radius_um,
            intensity=s.intensity,
            duration_ms=s.duration_ms,
            perfusion=None if p is None else p.run(),
            perfuse_after_events=1 if p is None or p.after_events is None else p.after_events,
            perfuse_at_s=None if p is None else p.at_s,
        )
