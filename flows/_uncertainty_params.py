"""Typed parameters of the uncertainty-triggered flow (loadable from YAML with
``scopeflow run uncertainty``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeflow import ComputeProfile, ConfigurationError, EnvelopeViolation
from tasks.compute import get_profile
from tasks.decisions import CARRY_FORWARD_MAX_RUN, UncertaintyRules, UncertaintyTriggeredPolicy
from tasks.hardware import SafetyEnvelope
from tasks.inference import BackendConfig

from ._edge_params import MicroscopeConnection
from ._tracking_params import TrackedPosition

__all__ = ["ChannelSetting", "UncertaintyParams"]


class ChannelSetting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str = Field(min_length=1)
    exposure_ms: float = Field(gt=0)


class UncertaintyParams(MicroscopeConnection):
    """Image every position in the cheap channel; acquire the expensive one only where the
    model predicting it from the cheap one is unsure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positions: list[TrackedPosition] = Field(min_length=1, max_length=96)
    objective: str = Field("20x", description="Objective preset (must be in the envelope)")
    z_um: float = 0.0
    time_points: int = Field(8, ge=1, le=100_000)
    interval_s: float = Field(2.0, gt=0, description="Wall-clock seconds between time points")
    cheap: ChannelSetting = Field(
        default_factory=lambda: ChannelSetting(channel="BF", exposure_ms=10.0),
        description="Taken every time point; the model predicts the expensive channel from it",
    )
    expensive: ChannelSetting = Field(
        default_factory=lambda: ChannelSetting(channel="DAPI", exposure_ms=50.0),
        description="Acquired only where the prediction is unsure (every time point with "
        "protocol 'always')",
    )
    protocol: Literal["uncertainty", "always"] = Field(
        "uncertainty",
        description="'always' is the static protocol: the expensive channel every time point",
    )
    predictor: Literal["virtual-stain", "carry-forward"] = Field(
        "carry-forward",
        description="'virtual-stain': the model's nuclei stand in where its own uncertainty is "
        "low; 'carry-forward': the last real nuclei (moved by the median shift, with cells "
        "entering at the edge) stand in where the model's nuclei changed little since that "
        "acquisition",
    )
    max_predicted_run: int | None = Field(
        CARRY_FORWARD_MAX_RUN,
        ge=1,
        description="carry-forward: acquire the expensive channel after this many predicted "
        "time points in a row at a position, however little changed (None: no limit)",
    )
    match_um: float = Field(
        4.0, gt=0, description="carry-forward: a nucleus' twin lies at most this far, µm"
    )
    reference_model: str = Field(
        "classical-candidates",
        description="Segments the expensive frames in the loop (carry-forward's real nuclei) "
        "and for the score; 'classical-candidates' is the classical model, with a more "
        "sensitive segmentation's extra nuclei as candidates that carry-forward adds to its "
        "reference where the virtual stain confirms them",
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        description="Uncertainty above which the expensive channel is acquired (virtual-stain: "
        "1 - the ensemble's agreement, 0-1; carry-forward: nuclei changed, those inside the "
        "field weighted as flicker); None: the threshold calibrated with the model's weights "
        "(virtual-stain) or for carry-forward",
    )
    model: str = Field(
        "virtual-stain",
        description="Predicts the expensive channel and reports `uncertainty` (ObjectTable.extra)",
    )
    model_options: dict = Field(default_factory=dict)
    backend: BackendConfig | None = Field(
        default_factory=BackendConfig,
        description="Where the model runs (Ray actors / Dask workers) unless `profile` is set; "
        "None (and no profile): in this process",
    )
    profile: str | None = Field(None, description="Compute profile for the model's workers")
    deadline_ms: float | None = Field(
        3000.0,
        gt=0,
        description="Frame ready -> result; later results fall back to the local model",
    )
    fallback_model: str | None = Field(
        "virtual-stain", description="Local model for late frames (must report uncertainty too)"
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Give a crashed run's id to resume it: no command already run is repeated",
    )
    transport: Literal["auto", "shm", "tcp", "websocket"] = "auto"
    output_dir: Path = Path("scopeflow-data")

    @model_validator(mode="after")
    def _channels_differ(self) -> UncertaintyParams:
        self.rules(0.5)  # raises ValueError (shown as a validation error) with the fix
        if self.fallback_model not in (None, self.model):
            raise ValueError(
                f"fallback_model {self.fallback_model!r} differs from model {self.model!r}: a "
                "late frame's fallback must report the same uncertainty; use the same model "
                "or None"
            )
        return self

    def rules(self, threshold: float) -> UncertaintyRules:
        return UncertaintyRules(
            time_points=self.time_points,
            interval_s=self.interval_s,
            threshold=threshold,
            cheap=(self.cheap.channel, self.cheap.exposure_ms),
            expensive=(self.expensive.channel, self.expensive.exposure_ms),
            always=self.protocol == "always",
            z_um=self.z_um,
            predictor=self.predictor,
            max_predicted_run=self.max_predicted_run,
            match_um=self.match_um,
        )

    def policy(self, threshold: float) -> UncertaintyTriggeredPolicy:
        return UncertaintyTriggeredPolicy(
            [(p.name, p.x_um, p.y_um) for p in self.positions], self.rules(threshold)
        )

    def check_envelope(self, envelope: SafetyEnvelope) -> None:
        """ConfigurationError naming the fix when the edge's envelope forbids either channel,
        its exposure, the objective or a position (nothing has been acquired then)."""
        if envelope.allowed_objectives and self.objective not in envelope.allowed_objectives:
            raise ConfigurationError(
                f"objective {self.objective!r} is not allowed by the edge's envelope "
                f"({', '.join(sorted(envelope.allowed_objectives))}); choose one of those"
            )
        for role, setting in (("cheap", self.cheap), ("expensive", self.expensive)):
            where = f"the {role} channel"
            try:
                envelope.check_channel(setting.channel, where)
                envelope.check_exposure(setting.exposure_ms, where)
                envelope.power_mw(setting.channel, where)
                for p in self.positions:
                    envelope.check_position(p.x_um, p.y_um, self.z_um, f"position {p.name}")
            except EnvelopeViolation as exc:
                raise ConfigurationError(
                    f"the edge's envelope forbids {where} ({setting.channel}, "
                    f"{setting.exposure_ms:g} ms): {exc}; change the params file or the "
                    "envelope (nothing was acquired)"
                ) from exc

    def compute_profile(self) -> ComputeProfile | None:
        return None if self.profile is None else get_profile(self.profile)
