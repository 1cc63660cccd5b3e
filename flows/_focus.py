"""Software autofocus as a step any live flow can take (issue 14 section 3).

- ``AutofocusSettings``: the typed knobs to put in a flow's parameters (method, how often, the
  light of the focus frames, the search, the objective's optics for its depth of field, the
  workers that score the frames);
- ``open_focus_workers`` / ``focus_analyzer``: the frames' sharpness (``tasks.qc``'s
  normalised variance) computed on Ray/Dask workers or threads, with the same score computed
  here as the fallback of a late frame;
- ``autofocus_plan``: the pure ``AutofocusPolicy``'s plan for positions and time points;
- ``find_focus``: one autofocus call at one position as its own loop phase through
  ``tasks.live.run_edge_phase`` (command ids ``<run>.<phase>.p000-t00000-af<round>``), for a
  flow that needs focus between its own phases (targeted imaging before a detail stack, a
  tracking flow before a time point).

``flows/focus_timelapse.py`` runs the policy over a whole drifting time-lapse in one phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.decisions import (
    AutofocusPlan,
    AutofocusPolicy,
    AutofocusState,
    FocusRules,
    depth_of_field_um,
)
from tasks.hardware import EdgeClient, SafetyEnvelope
from tasks.hardware.sim import numerical_aperture
from tasks.live import Analyzer, AnalyzerSettings, LiveFrame, run_edge_phase
from tasks.qc import FocusScore, QCWorkers, measure_focus_payload

__all__ = [
    "AutofocusSettings",
    "FocusOptics",
    "autofocus_plan",
    "find_focus",
    "focus_analyzer",
    "focus_z_limits",
    "open_focus_workers",
]

# emission wavelengths of the simulator's light paths, µm (its renderer's PSF uses the same)
_SIM_WAVELENGTH_UM = {"BF": 0.55, "DAPI": 0.46, "GFP": 0.51}


class FocusOptics(BaseModel):
    """The objective and camera that set the depth of field (default: the simulator's 20x)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    na: float = Field(0.47, gt=0, le=1.7, description="Numerical aperture of the objective")
    wavelength_um: float = Field(0.46, gt=0.2, lt=2.0, description="Emission wavelength, µm")
    refractive_index: float = Field(1.0, ge=1.0, le=1.6, description="Immersion medium (air 1)")
    camera_pixel_um: float = Field(6.5, gt=0, description="Camera pixel pitch, µm")
    magnification: float = Field(20.0, gt=0, description="Total magnification to the camera")

    def dof_um(self) -> float:
        """Total depth of field (``tasks.decisions.depth_of_field_um``: the standard formula
        lambda n / NA^2 + n e / (M NA)); in focus within +- half of it."""
        return depth_of_field_um(
            self.na,
            self.wavelength_um,
            refractive_index=self.refractive_index,
            camera_pixel_um=self.camera_pixel_um,
            magnification=self.magnification,
        )

    @classmethod
    def simulated(
        cls, magnification: float, channel: str = "DAPI", camera_pixel_um: float = 6.5
    ) -> FocusOptics:
        """The simulator's objective of this magnification (its NA by magnification, dry)."""
        return cls(
            na=numerical_aperture(magnification),
            wavelength_um=_SIM_WAVELENGTH_UM.get(channel, 0.5),
            camera_pixel_um=camera_pixel_um,
            magnification=magnification,
        )


class AutofocusSettings(BaseModel):
    """Software autofocus in a flow: how it searches and where its frames are scored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["track", "search"] = Field(
        "track",
        description="track: 3 frames around the focus predicted from the last one and the "
        "drift rate (coarse-to-fine search the first time and after a miss); search: "
        "coarse-to-fine every call",
    )
    every: int = Field(
        1,
        ge=0,
        description="Autofocus every this many time points, imaging the ones between at the "
        "predicted focus; 0: only at the first time point (the static protocol)",
    )
    channel: str = Field("DAPI", description="Light of the focus frames")
    exposure_ms: float = Field(10.0, gt=0, description="Exposure of the focus frames")
    search_range_um: float = Field(10.0, gt=0, le=500, description="Search: +- this around z")
    coarse_steps: int = Field(7, ge=3, le=12)
    fine_steps: int = Field(4, ge=2, le=12)
    max_frames: int = Field(15, ge=3, le=50, description="Most frames one call takes")
    max_move_um: float = Field(25.0, gt=0, description="Largest focus change one call makes")
    min_structure: float = Field(
        1.0,
        ge=0,
        description="A frame whose variance is less than this above its pixel noise "
        "holds no signal (a blank field): no focus is found, nothing moves",
    )
    z_limits_um: tuple[float, float] | None = Field(
        None, description="Narrower z limits for the sweeps than the edge's envelope"
    )
    region_um: float | None = Field(
        None,
        gt=0,
        description="Score only a centred square of this side (µm) of each focus frame: the "
        "place focused on (a target cell), not its neighbours at other heights; null: the "
        "whole field",
    )
    optics: FocusOptics = Field(default_factory=FocusOptics)
    workers: Literal["ray", "dask", "threads"] = Field(
        "ray", description="Where the frames' sharpness is computed"
    )
    n_workers: int = Field(1, ge=1, le=64)
    deadline_ms: float | None = Field(
        1000.0, gt=0, description="Frame ready -> score; later ones are scored here"
    )

    def rules(self, z_limits_um: tuple[float, float]) -> FocusRules:
        return FocusRules(
            dof_um=self.optics.dof_um(),
            z_limits_um=z_limits_um,
            search_range_um=self.search_range_um,
            coarse_steps=self.coarse_steps,
            fine_steps=self.fine_steps,
            max_frames=self.max_frames,
            max_move_um=self.max_move_um,
            min_structure=self.min_structure,
        )


def focus_z_limits(edge: EdgeClient, settings: AutofocusSettings) -> tuple[float, float]:
    """The z range sweeps may use: the edge's envelope, narrowed by the settings' own limits."""
    envelope = SafetyEnvelope.model_validate(edge.info()["envelope"])
    lo, hi = envelope.z_limits_um
    if settings.z_limits_um is not None:
        lo, hi = max(lo, settings.z_limits_um[0]), min(hi, settings.z_limits_um[1])
        if lo >= hi:
            raise ValueError(
                f"autofocus z_limits_um {settings.z_limits_um} do not overlap the edge's "
                f"envelope z limits {envelope.z_limits_um}; give limits inside them"
            )
    return lo, hi


def open_focus_workers(settings: AutofocusSettings) -> QCWorkers:
    """Ray CPUs, Dask worker processes or threads computing ``tasks.qc.focus_score``."""
    return QCWorkers(
        settings.workers,
        workers=settings.n_workers,
        measure=measure_focus_payload,
        measure_args=(settings.region_um,),
    )


def focus_analyzer(
    workers: QCWorkers | None, deadline_ms: float | None = 1000.0, region_um: float | None = None
) -> Analyzer:
    """The analyzer of a focus phase: scores from ``workers`` (None: in this process), a late
    one scored here; ``region_um`` as in ``AutofocusSettings`` (the workers have theirs)."""

    def score_here(frame: LiveFrame) -> FocusScore:
        return measure_focus_payload(frame.pixels(), frame.header.pixel_size_um, region_um)

    in_flight = 2 * (workers.workers if workers is not None else 1)
    return Analyzer(
        workers,
        AnalyzerSettings(
            deadline_ms=deadline_ms if workers is not None else None,
            max_in_flight=in_flight,
            local=score_here,
        ),
    )


def autofocus_plan(
    settings: AutofocusSettings,
    positions: list[tuple[str, float, float]],
    z_limits_um: tuple[float, float],
    *,
    start_z_um: float,
    time_points: int = 1,
    interval_s: float = 1.0,
    imaging: tuple[tuple[str, float], ...] = (),
) -> AutofocusPlan:
    return AutofocusPlan(
        positions=tuple(positions),
        rules=settings.rules(z_limits_um),
        start_z_um=start_z_um,
        time_points=time_points,
        interval_s=interval_s,
        method=settings.method,
        autofocus_every=settings.every,
        focus_channel=settings.channel,
        focus_exposure_ms=settings.exposure_ms,
        imaging=imaging,
    )


def find_focus(
    edge: EdgeClient,
    workers: QCWorkers | None,
    settings: AutofocusSettings,
    *,
    x_um: float,
    y_um: float,
    z_um: float,
    run_id: str,
    phase: str,
    decisions_path: Path,
    first_frame: int,
) -> dict[str, Any]:
    """One autofocus call at (x, y), starting around ``z_um``, as its own loop phase; its
    result (``z_um``, ``found``, ``frames``, ``method``, ``reason``). The focus drive is not
    moved to the result: the caller images at ``z_um`` (a failed call returns the start)."""
    limits = focus_z_limits(edge, settings)
    search = settings.model_copy(update={"method": "search", "every": 1})
    policy = AutofocusPolicy(
        autofocus_plan(search, [("focus", x_um, y_um)], limits, start_z_um=z_um)
    )
    report = run_edge_phase(
        edge,
        focus_analyzer(workers, settings.deadline_ms, settings.region_um),
        policy,
        run_id=run_id,
        phase=phase,
        decisions_path=decisions_path,
        first_frame=first_frame,
    )
    state: AutofocusState = report.state
    calls = state.positions[0].calls
    if not calls:
        return {"z_um": z_um, "found": False, "frames": 0, "method": "search",
                "reason": "no focus found: the call produced no frames"}  # fmt: skip
    return calls[-1]
