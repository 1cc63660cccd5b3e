"""One software-autofocus call as a pure search: which z to image next, and where focus is.

Two methods, both coarse-to-fine and bounded by ``max_frames`` frames per call:

- ``search`` (no idea where focus is: the first call, or after a failure): a coarse sweep of
  ``coarse_steps`` frames over ``center +- search_range_um``, then a fine sweep of
  ``fine_steps`` frames around the coarse maximum at a third of the coarse step, then a
  parabola through the logarithm of the three best neighbouring scores (a Gaussian's peak).
- ``track`` (focus was found ``dt`` ago): three frames at ``predicted -+ track_step_um`` and
  at ``predicted``, ``predicted`` being the last focus plus the drift rate measured between the
  last two calls; the same parabola when the middle frame is the sharpest; otherwise two more
  frames uphill, then a ``search`` around the best frame with what is left of the budget.

Every z asked for is clipped to ``z_limits_um`` (the focus drive's travel and the envelope's Z
limits), with the reason kept; a call whose frames hold no signal (a blank field: the image's
variance is the camera's noise) ends with ``found=False`` and the focus where it was, and a
result further than ``max_move_um`` from where the call started is clipped to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "FocusResult",
    "FocusRules",
    "FocusSearch",
    "FocusSweep",
    "depth_of_field_um",
    "fit_focus_peak",
]

Method = Literal["search", "track"]


def depth_of_field_um(
    na: float,
    wavelength_um: float,
    *,
    refractive_index: float = 1.0,
    camera_pixel_um: float | None = None,
    magnification: float | None = None,
) -> float:
    """Total depth of field of an objective, µm, by the standard formula (Inoué & Spring,
    "Video Microscopy"; Nikon MicroscopyU "Depth of Field and Depth of Focus"):

        d = lambda * n / NA^2 + n * e / (M * NA)

    the wave-optical term plus the geometric term of a detector whose pixel pitch is ``e``
    (µm) behind a total magnification ``M`` (left out when either is None). The sample is in
    focus within +- d / 2 of the best plane."""
    if not 0 < na < refractive_index + 1e-9:
        raise ValueError(f"NA {na} must be positive and at most the refractive index")
    if wavelength_um <= 0:
        raise ValueError(f"wavelength {wavelength_um} µm must be positive")
    d = wavelength_um * refractive_index / na**2
    if camera_pixel_um is not None and magnification is not None:
        d += refractive_index * camera_pixel_um / (magnification * na)
    return d


@dataclass(frozen=True)
class FocusRules:
    """How one autofocus call searches. Lengths in µm. ``dof_um``: the objective's total depth
    of field (``depth_of_field_um``), the scale of the fine steps; ``min_structure``: a frame
    whose variance is less than this many times its pixel noise above it holds no signal."""

    dof_um: float
    z_limits_um: tuple[float, float] = (-200.0, 200.0)
    search_range_um: float = 10.0
    coarse_steps: int = 7
    fine_steps: int = 4
    track_step_um: float | None = None  # default: the depth of field
    max_frames: int = 15
    max_move_um: float = 25.0
    min_structure: float = 1.0

    def __post_init__(self) -> None:
        lo, hi = self.z_limits_um
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"z_limits_um must be finite (low, high) with low < high: {lo, hi}")
        if self.dof_um <= 0 or self.search_range_um <= 0:
            raise ValueError("dof_um and search_range_um must be positive")
        if self.coarse_steps < 3 or self.fine_steps < 2:
            raise ValueError("a search needs at least 3 coarse and 2 fine steps")
        if not 3 <= self.max_frames <= 50:
            raise ValueError(f"max_frames {self.max_frames}: give 3..50 frames per call")
        if self.coarse_steps + self.fine_steps > self.max_frames:
            raise ValueError(
                f"coarse_steps {self.coarse_steps} + fine_steps {self.fine_steps} exceed "
                f"max_frames {self.max_frames}; lower the steps or raise max_frames"
            )

    @property
    def step_um(self) -> float:
        return self.track_step_um if self.track_step_um is not None else self.dof_um


@dataclass(frozen=True)
class FocusSweep:
    """The z positions to image next (absolute, µm); ``note``: why some were clipped."""

    z_um: tuple[float, ...]
    stage: str
    note: str | None = None


@dataclass(frozen=True)
class FocusResult:
    """Where focus is (``z_um``; where the call started when ``found`` is False), how many
    frames the call took, and why it ended."""

    z_um: float
    found: bool
    frames: int
    method: Method
    reason: str
    peak_sharpness: float | None = None


def fit_focus_peak(z_um: Sequence[float], sharpness: Sequence[float]) -> tuple[float, bool]:
    """The sharpest z of a sweep: a parabola through the logarithm of the best score and its
    two neighbours in z (the peak of a Gaussian), and whether the peak is bracketed: inside
    the sweep. With the best frame at an end, the parabola through the three frames at that
    end brackets the peak only when its vertex lies inside them; otherwise the best frame's z
    comes back, unbracketed (the caller looks further that way)."""
    z = np.asarray(z_um, dtype=float)
    s = np.asarray(sharpness, dtype=float)
    if z.size == 0:
        raise ValueError("no frames to fit")
    order = np.argsort(z)
    z, s = z[order], s[order]
    k = int(np.argmax(s))
    if z.size < 3:
        return float(z[k]), False
    j = min(max(k, 1), z.size - 2)  # the middle of the three frames fitted
    if np.any(s[j - 1 : j + 2] <= 0):
        return float(z[k]), False
    zz, ls = z[j - 1 : j + 2], np.log(s[j - 1 : j + 2])
    a, b, _ = np.polyfit(zz - zz[1], ls, 2)
    if a >= 0:  # flat or convex: the best frame, bracketed only when it is inside
        return float(z[k]), j == k
    peak = float(zz[1] - b / (2 * a))
    if j != k and not zz[0] <= peak <= zz[2]:
        return float(z[k]), False
    return float(np.clip(peak, zz[0], zz[2])), True


@dataclass
class FocusSearch:
    """The state of one autofocus call: ``first()`` the first sweep, then ``next(scores)``
    after each sweep's frames (sharpness and structure per z), until a ``FocusResult``."""

    rules: FocusRules
    start_z_um: float
    method: Method = "search"
    predicted_z_um: float | None = None
    zs: list[float] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    structure: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stage: str = ""

    def first(self) -> FocusSweep | FocusResult:
        centre = self.start_z_um if self.predicted_z_um is None else self.predicted_z_um
        if self.method == "track":
            h = self.rules.step_um
            return self._sweep("track", [centre - h, centre, centre + h])
        return self._coarse(centre)

    def next(
        self, z_um: Sequence[float], sharpness: Sequence[float], structure: Sequence[float]
    ) -> FocusSweep | FocusResult:
        """Add one sweep's scores (NaN: a frame that could not be scored); the next step."""
        for z, s, g in zip(z_um, sharpness, structure, strict=True):
            if math.isfinite(s) and math.isfinite(g):
                self.zs.append(float(z))
                self.sharpness.append(float(s))
                self.structure.append(float(g))
        if not self.structure or max(self.structure) < self.rules.min_structure:
            best = max(self.structure, default=float("nan"))
            return self._result(
                self.start_z_um,
                False,
                f"no focus found: no signal in {len(self.zs)} frames (structure "
                f"{best:.2g} < {self.rules.min_structure:g}: a blank field, or the light is off); "
                "the focus stays where it was",
            )
        peak, bracketed = fit_focus_peak(self.zs, self.sharpness)
        if self.stage == "track":
            if bracketed:
                return self._found(peak, "track: peak bracketed by 3 frames")
            uphill = 1.0 if peak >= float(np.mean(self.zs)) else -1.0
            h = self.rules.step_um
            return self._sweep("track-extend", [peak + uphill * h, peak + 2 * uphill * h])
        if self.stage == "track-extend":
            if bracketed:
                return self._found(peak, "track: peak bracketed after extending uphill")
            return self._coarse(peak)
        if self.stage == "coarse":
            if not bracketed:
                return self._moved_to_edge(peak)
            step, n = self._coarse_step() / 3.0, self.rules.fine_steps
            return self._sweep("fine", [peak + step * (i - (n - 1) / 2) for i in range(n)])
        # fine
        if not bracketed:
            return self._moved_to_edge(peak)
        return self._found(peak, f"{self.method}: coarse-to-fine")

    # ------------------------------------------------------------------ internals

    def _coarse_step(self) -> float:
        return 2 * self.rules.search_range_um / (self.rules.coarse_steps - 1)

    def _coarse(self, centre: float) -> FocusSweep | FocusResult:
        r, n = self.rules.search_range_um, self.rules.coarse_steps
        return self._sweep("coarse", list(np.linspace(centre - r, centre + r, n)))

    def _sweep(self, stage: str, zs: list[float]) -> FocusSweep | FocusResult:
        lo, hi = self.rules.z_limits_um
        left = self.rules.max_frames - len(self.zs)
        wanted = [float(z) for z in zs]
        clipped = sorted({round(min(max(z, lo), hi), 6) for z in wanted} - set(self.zs))
        note = None
        if any(not lo <= z <= hi for z in wanted):
            note = (
                f"{stage} sweep {min(wanted):.2f}..{max(wanted):.2f} µm clipped to the z limits "
                f"[{lo:g}, {hi:g}] µm (focus drive travel / envelope)"
            )
            self.notes.append(note)
        if len(clipped) > left:
            centre = float(np.mean(wanted))
            clipped = sorted(sorted(clipped, key=lambda z: abs(z - centre))[:left])
            self.notes.append(f"{stage} sweep cut to {left} frames (max_frames)")
        if not clipped:
            best = self.start_z_um
            if self.sharpness:
                best = self.zs[int(np.argmax(self.sharpness))]
            why = (
                "the frame budget is spent" if left <= 0 else "the sweep lies outside the z limits"
            )
            return self._result(
                best, False, f"no focus found: {why}; the focus stays at the best frame"
            )
        self.stage = stage
        return FocusSweep(tuple(clipped), stage, note)

    def _moved_to_edge(self, z: float) -> FocusResult:
        return self._result(
            z,
            False,
            f"no peak inside the {self.stage} sweep: moved to its sharpest end ({z:.2f} µm); "
            "the next call searches again around it",
        )

    def _found(self, z: float, reason: str) -> FocusResult:
        return self._result(z, True, reason)

    def _result(self, z: float, found: bool, reason: str) -> FocusResult:
        limit = self.rules.max_move_um
        if abs(z - self.start_z_um) > limit:
            clipped = self.start_z_um + math.copysign(limit, z - self.start_z_um)
            reason += (
                f"; the move {z - self.start_z_um:+.2f} µm is clipped to max_move_um {limit:g} "
                "(not at focus yet: the next call goes on from there)"
            )
            z, found = clipped, False
        lo, hi = self.rules.z_limits_um
        z = min(max(z, lo), hi)
        if self.notes:
            reason += "; " + "; ".join(self.notes)
        peak = max(self.sharpness) if self.sharpness else None
        return FocusResult(float(z), found, len(self.zs), self.method, reason, peak)
