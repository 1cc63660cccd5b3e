"""The knobs of the simulated microscope, in one frozen, validated model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._drift import FocusDrift

__all__ = ["FLUORESCENCE_CHANNELS", "SimulatorConfig"]

FLUORESCENCE_CHANNELS: tuple[str, ...] = ("DAPI", "GFP")


class SimulatorConfig(BaseModel):
    """Everything that decides what the simulated microscope shows (immutable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, description="Seed for the sample and the camera noise.")

    # camera
    width: int = Field(2048, ge=16, le=8192, description="Sensor width in pixels (binning 1).")
    height: int = Field(2048, ge=16, le=8192, description="Sensor height in pixels (binning 1).")
    camera_pixel_um: float = Field(6.5, gt=0, description="Physical camera pixel pitch, µm.")
    flip_x: bool = Field(False, description="Image columns run against stage +x.")
    flip_y: bool = Field(False, description="Image rows run against stage +y.")
    read_noise_e: float = Field(1.6, ge=0, description="Read noise per pixel read, electrons.")
    camera_offset_adu: float = Field(100.0, ge=0, description="Camera bias (offset), ADU.")
    camera_gain_e_per_adu: float = Field(0.5, gt=0, description="Electrons per ADU.")

    # optics
    objectives: dict[str, float] = Field(
        default_factory=lambda: {"10x": 10.0, "20x": 20.0, "40x": 40.0},
        description="Objective label -> magnification. Pixel size = pitch * binning / mag.",
    )
    channel_presets: dict[str, str] = Field(
        default_factory=lambda: {"FITC": "GFP", "Cy5": "DAPI"},
        description="Extra presets of the Channel group -> the light path they select: FITC "
        "images the GFP (cytoplasm) label, Cy5 a far-red nuclear stain (as DRAQ5 would), drawn "
        "like the DAPI label; so sequences written for other microscopes run here.",
    )
    focus_range_um: tuple[float, float] = Field(
        (-2000.0, 2000.0), description="Travel limits of the Z focus drive, µm."
    )

    # sample geometry
    slide_width_um: float = Field(10_000.0, gt=0, description="Slide extent in x, µm.")
    slide_height_um: float = Field(10_000.0, gt=0, description="Slide extent in y, µm.")
    nuclei_per_mm2: float = Field(300.0, ge=0, description="Cell density at t = 0.")
    nucleus_radius_um: tuple[float, float] = Field(
        (4.0, 8.0), description="Range of nucleus radii at birth, µm."
    )
    cell_to_nucleus_ratio: float = Field(
        2.0, ge=1.0, description="Cytoplasm (GFP, BF outline) radius / nucleus radius."
    )
    cluster_fraction: float = Field(
        0.3, ge=0, le=1, description="Fraction of cells seeded touching a neighbour."
    )
    out_of_focus_fraction: float = Field(
        0.03, ge=0, le=1, description="Fraction of cells floating 4-20 µm above the focal plane."
    )
    plate: str | None = Field(
        None,
        description=(
            "A useq plate type (e.g. '96-well'): cells only in its wells, the slide an SBS "
            "footprint (127.76 x 85.48 mm) unless slide_width_um/slide_height_um are given."
        ),
    )
    plate_a1_um: tuple[float, float] | None = Field(
        None, description="Stage position of A1's centre, µm (default: where an SBS plate has it)."
    )
    plate_rotation_deg: float = Field(
        0.0, ge=-10, le=10, description="The plate's rotation on the stage, degrees anti-clockwise."
    )
    focal_plane_z_um: float = Field(0.0, description="Z of the cell layer at the slide centre, µm.")
    tilt_x: float = Field(0.0, description="Slide tilt: dz/dx of the cell layer (µm per µm).")
    tilt_y: float = Field(0.0, description="Slide tilt: dz/dy of the cell layer (µm per µm).")
    focus_drift: FocusDrift | None = Field(
        None, description="Thermal focus drift of the cell layer over time (None: no drift)."
    )

    # dynamics
    time_scale: float = Field(
        1.0, ge=0, description="Simulated seconds per real second; 0 freezes time (tests)."
    )
    cell_cycle_h: float = Field(20.0, gt=0, description="Mean cell-cycle length, hours.")
    cell_cycle_jitter: float = Field(
        0.15, ge=0, lt=0.5, description="Relative standard deviation of the cycle length."
    )
    rounding_min: float = Field(
        15.0, ge=0, description="Minutes a cell spends rounded up before it divides."
    )
    motility_um_per_min: float = Field(0.3, ge=0, description="Mean cell speed, µm/min.")

    # photometry (rates at 100 % intensity, through the 10x objective, binning 1)
    signal_e_per_ms: dict[str, float] = Field(
        default_factory=lambda: {"DAPI": 60.0, "GFP": 25.0},
        description="Peak in-focus fluorescence of a cell, electrons per pixel per ms.",
    )
    background_e_per_ms: dict[str, float] = Field(
        default_factory=lambda: {"BF": 400.0, "DAPI": 1.0, "GFP": 2.0},
        description="Background light per channel, electrons per pixel per ms.",
    )
    brightness_sigma: dict[str, float] = Field(
        default_factory=lambda: {"DAPI": 0.25, "GFP": 0.5},
        description="Cell-to-cell spread of each label's brightness: the standard deviation of "
        "its natural logarithm (log-normal; 0.7 gives dim and bright cells a factor ~4 apart).",
    )
    bleach_half_dose: dict[str, float] = Field(
        default_factory=lambda: {"DAPI": 20_000.0, "GFP": 8_000.0},
        description="Light dose (ms at 100 % intensity) that halves a fluorophore's signal.",
    )
    photodamage_dose: dict[str, float] | None = Field(
        None,
        description="Photodamage: the dose (ms at 100 % intensity) of each channel's light that "
        "stops a cell dividing (weighted sum over channels reaches 1); None: no photodamage.",
    )

    @model_validator(mode="before")
    @classmethod
    def _plate_footprint(cls, data: object) -> object:
        """A plate makes the slide an SBS footprint unless its size is given."""
        if isinstance(data, dict) and data.get("plate"):
            data = {"slide_width_um": 127_760.0, "slide_height_um": 85_480.0, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> SimulatorConfig:
        lo, hi = self.nucleus_radius_um
        if not 0 < lo <= hi:
            raise ValueError(
                f"nucleus_radius_um must be (min, max) with 0 < min <= max, got {lo, hi}"
            )
        if not self.objectives or any(m <= 0 for m in self.objectives.values()):
            raise ValueError("objectives must map at least one label to a positive magnification")
        if self.focus_range_um[0] >= self.focus_range_um[1]:
            raise ValueError("focus_range_um must be (low, high) with low < high")
        for name, table in (
            ("signal_e_per_ms", self.signal_e_per_ms),
            ("bleach_half_dose", self.bleach_half_dose),
            ("brightness_sigma", self.brightness_sigma),
        ):
            if missing := set(FLUORESCENCE_CHANNELS) - set(table):
                raise ValueError(f"{name} needs a value for {sorted(missing)}")
        if bad := {k: v for k, v in self.brightness_sigma.items() if not 0 <= v <= 3}:
            raise ValueError(f"brightness_sigma {bad}: each spread must be between 0 and 3")
        for preset, light in self.channel_presets.items():
            if light not in ("BF", *FLUORESCENCE_CHANNELS):
                raise ValueError(
                    f"channel_presets: {preset!r} selects {light!r}; use one of "
                    f"{['BF', *FLUORESCENCE_CHANNELS]}"
                )
        bad = {
            ch: dose
            for ch, dose in (self.photodamage_dose or {}).items()
            if ch not in FLUORESCENCE_CHANNELS or dose <= 0
        }
        if bad:
            raise ValueError(
                f"photodamage_dose {bad}: give a positive dose (ms at 100 % intensity) per "
                f"channel of {list(FLUORESCENCE_CHANNELS)}"
            )
        if missing := {"BF", *FLUORESCENCE_CHANNELS} - set(self.background_e_per_ms):
            raise ValueError(f"background_e_per_ms needs a value for {sorted(missing)}")
        if self.plate is not None:
            import useq

            if self.plate not in useq.registered_well_plate_keys():
                known = ", ".join(sorted(useq.registered_well_plate_keys()))
                raise ValueError(f"unknown plate type {self.plate!r}; known types: {known}")
        return self

    def pixel_size_um(self, objective: str, binning: int = 1) -> float:
        """Sample-plane pixel size for an objective label and binning."""
        return self.camera_pixel_um * binning / self.objectives[objective]
