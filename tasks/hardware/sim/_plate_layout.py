"""A multi-well plate as the simulator's slide: where the wells are, and cells placed in them.

The plate is one of useq's registered types laid on an SBS footprint (127.76 x 85.48 mm), A1
where the configuration puts it, rotated as the configuration says; its geometry is useq's own
``WellPlatePlan`` (the same transform the flows use), so a calibration that recovers it is
checked against the simulator's truth, not against a second implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import useq

from ._config import SimulatorConfig

__all__ = ["SBS_FOOTPRINT_UM", "WellLayout", "well_layout"]

SBS_FOOTPRINT_UM = (127_760.0, 85_480.0)  # ANSI/SLAS 1-2004 plate footprint
SBS_A1_FROM_CORNER_UM = (14_380.0, 11_240.0)  # A1's centre from the plate's top-left corner


@dataclass(frozen=True)
class WellLayout:
    """Well centres (n, 2) in stage µm, well size (w, h) µm, circular or rectangular."""

    centres_um: np.ndarray
    size_um: tuple[float, float]
    circular: bool
    rotation_deg: float

    @property
    def well_area_um2(self) -> float:
        w, h = self.size_um
        return float(np.pi * w * h / 4 if self.circular else w * h)

    def place(self, u_well: np.ndarray, u_a: np.ndarray, u_b: np.ndarray) -> np.ndarray:
        """Uniform points in the wells from three uniform [0, 1) draws per point: (n, 2) µm."""
        n_wells = len(self.centres_um)
        well = np.minimum((u_well * n_wells).astype(np.int64), n_wells - 1)
        w, h = self.size_um
        if self.circular:
            r = np.sqrt(u_a)
            ang = 2 * np.pi * u_b
            dx, dy = r * np.cos(ang) * w / 2, r * np.sin(ang) * h / 2
        else:
            dx, dy = (u_a - 0.5) * w, (u_b - 0.5) * h
        theta = np.radians(self.rotation_deg)
        c, s = np.cos(theta), np.sin(theta)
        offsets = np.stack([c * dx - s * dy, s * dx + c * dy], axis=1)
        return self.centres_um[well] + offsets


def well_layout(config: SimulatorConfig) -> WellLayout:
    """The wells of ``config.plate`` on the simulated stage."""
    if config.plate is None:
        raise ValueError("the simulator has no plate: set SimulatorConfig.plate, e.g. '96-well'")
    plan = useq.WellPlatePlan(
        plate=config.plate,
        a1_center_xy=config.plate_a1_um or default_a1_um(config),
        rotation=config.plate_rotation_deg,
        selected_wells=slice(None),
    )
    centres = np.array([(p.x, p.y) for p in plan.all_well_positions], dtype=float)
    w, h = plan.plate.well_size
    return WellLayout(
        centres, (w * 1000.0, h * 1000.0), plan.plate.circular_wells, config.plate_rotation_deg
    )


def default_a1_um(config: SimulatorConfig) -> tuple[float, float]:
    """A1's centre on an SBS plate whose top-left corner is at (0, slide height); rows run
    towards -y, as in useq's plate coordinates."""
    dx, dy = SBS_A1_FROM_CORNER_UM
    return (dx, config.slide_height_um - dy)
