"""Pure-Python unicore devices of the simulated microscope.

The camera renders from the live state of the other devices, which it reaches through a shared
:class:`Rig` (set up by ``build_simulated_core``), not through the core.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from pymmcore_plus import FocusDirection
from pymmcore_plus.experimental.unicore import (
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    StateDevice,
    XYStageDevice,
    pymm_property,
)

from scopeflow import HardwareError

from ._config import FLUORESCENCE_CHANNELS, SimulatorConfig
from ._render import CHANNELS, Renderer, ScopeState

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from ._clock import SimClock

__all__ = [
    "ALLOWED_BINNING",
    "DeviceFaults",
    "Rig",
    "SimCamera",
    "SimFocus",
    "SimIllumination",
    "SimObjectives",
    "SimShutter",
    "SimXYStage",
]

ALLOWED_BINNING = (1, 2, 4)


class DeviceFaults:
    """Failures to inject into the simulated devices (tests of the edge's failure policy): the
    next ``snap`` snaps raise, the next ``stage`` XY moves raise, the next ``hang`` XY moves
    never finish (the stage stays busy: the core's wait for it times out). Thread-safe."""

    KINDS = ("snap", "stage", "hang")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = dict.fromkeys(self.KINDS, 0)

    def add(self, *, snap: int = 0, stage: int = 0, hang: int = 0) -> dict[str, int]:
        """Queue more failures; returns what is pending now."""
        with self._lock:
            self._pending["snap"] += snap
            self._pending["stage"] += stage
            self._pending["hang"] += hang
            return dict(self._pending)

    def clear(self) -> dict[str, int]:
        with self._lock:
            self._pending = dict.fromkeys(self.KINDS, 0)
            return dict(self._pending)

    def take(self, kind: str) -> bool:
        """True (and one fewer pending) when the next ``kind`` operation must fail."""
        with self._lock:
            if self._pending[kind] <= 0:
                return False
            self._pending[kind] -= 1
            return True


class SimXYStage(XYStageDevice):
    """Motorised XY stage over the slide; travel limits are the slide's extent."""

    def __init__(self, config: SimulatorConfig) -> None:
        super().__init__()
        self.faults = DeviceFaults()
        self._limits = (0.0, 0.0, config.slide_width_um, config.slide_height_um)
        self._x = config.slide_width_um / 2
        self._y = config.slide_height_um / 2
        self._origin = (0.0, 0.0)  # user coordinate = physical - origin
        self._hung = False  # an injected hang: the last move never reports done

    def busy(self) -> bool:
        return self._hung

    @property
    def physical_position(self) -> tuple[float, float]:
        return self._x, self._y

    def get_position_um(self) -> tuple[float, float]:
        return self._x - self._origin[0], self._y - self._origin[1]

    def set_position_um(self, x: float, y: float) -> None:
        if self.faults.take("stage"):
            raise HardwareError(
                "simulated fault: the XY stage controller did not answer (injected with "
                "POST /v1/sim/faults)"
            )
        self._hung = self.faults.take("hang")
        px, py = x + self._origin[0], y + self._origin[1]
        x0, y0, x1, y1 = self._limits
        if not (x0 <= px <= x1 and y0 <= py <= y1):
            raise HardwareError(
                f"XY target ({x:.1f}, {y:.1f}) µm is beyond the stage travel "
                f"x {x0 - self._origin[0]:.0f}..{x1 - self._origin[0]:.0f}, "
                f"y {y0 - self._origin[1]:.0f}..{y1 - self._origin[1]:.0f} µm; "
                "choose a position on the slide"
            )
        self._x, self._y = float(px), float(py)

    def home(self) -> None:
        self._x, self._y = self._limits[0], self._limits[1]

    def stop(self) -> None:
        """Moves are instantaneous; a hung one is given up."""
        self._hung = False

    def set_origin_x(self) -> None:
        self._origin = (self._x, self._origin[1])

    def set_origin_y(self) -> None:
        self._origin = (self._origin[0], self._y)


class SimFocus(StageDevice):
    """Z focus drive, µm; the cell layer is in focus at the config's focal plane."""

    def __init__(self, config: SimulatorConfig) -> None:
        super().__init__()
        self._range = config.focus_range_um
        self._z = config.focal_plane_z_um
        self._origin = 0.0

    @property
    def physical_position(self) -> float:
        return self._z

    def get_position_um(self) -> float:
        return self._z - self._origin

    def set_position_um(self, val: float) -> None:
        z = val + self._origin
        lo, hi = self._range
        if not lo <= z <= hi:
            raise HardwareError(
                f"focus target {val:.2f} µm is beyond the Z travel "
                f"{lo - self._origin:.0f}..{hi - self._origin:.0f} µm"
            )
        self._z = float(z)

    def get_focus_direction(self) -> FocusDirection:
        return FocusDirection.TowardSample

    def home(self) -> None:
        self._z = self._range[0]

    def stop(self) -> None:
        """Moves are instantaneous; nothing to stop."""

    def set_origin(self) -> None:
        self._origin = self._z


class SimShutter(ShutterDevice):
    """Excitation / transmitted-light shutter."""

    def __init__(self) -> None:
        super().__init__()
        self._open = False

    def get_open(self) -> bool:
        return self._open

    def set_open(self, open: bool) -> None:
        self._open = bool(open)


class SimIllumination(StateDevice):
    """Light source + filter set: one state per channel; ``Intensity`` is 0-100 %.

    ``presets``: more filter sets, each imaging one of the sample's light paths (FITC -> GFP),
    as states of their own, so the current preset is never ambiguous."""

    def __init__(self, presets: dict[str, str] | None = None) -> None:
        extra = {k: v for k, v in (presets or {}).items() if k not in CHANNELS}
        self._paths = (*CHANNELS, *extra.values())
        super().__init__(dict(enumerate((*CHANNELS, *extra))))
        self._state = CHANNELS.index("DAPI")
        self._intensity = 50.0

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = int(position)

    @property
    def channel(self) -> str:
        """The light path in use (a preset's: FITC -> GFP)."""
        return self._paths[self._state]

    @pymm_property(limits=(0.0, 100.0), name="Intensity")
    def intensity(self) -> float:
        """Light source power, percent."""
        return self._intensity

    @intensity.setter
    def intensity(self, value: float) -> None:
        self._intensity = float(value)


class SimObjectives(StateDevice):
    """Objective turret; labels and magnifications come from the config."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.labels = tuple(config.objectives)
        super().__init__(dict(enumerate(self.labels)))
        self._state = 0

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = int(position)

    @property
    def objective(self) -> str:
        return self.labels[self._state]


class Rig:
    """The devices' shared view of the microscope, used by the camera to render."""

    def __init__(
        self,
        config: SimulatorConfig,
        renderer: Renderer,
        clock: SimClock,
        xy: SimXYStage,
        focus: SimFocus,
        shutter: SimShutter,
        light: SimIllumination,
        objectives: SimObjectives,
    ) -> None:
        self.config = config
        self.renderer = renderer
        self.clock = clock
        self.xy = xy
        self.focus = focus
        self.shutter = shutter
        self.light = light
        self.objectives = objectives
        self.faults = xy.faults  # one set of injected faults for the whole rig
        self._core: weakref.ref[CMMCorePlus] | None = None
        self._lock = threading.Lock()  # the renderer's caches are not thread-safe

    def attach_core(self, core: CMMCorePlus) -> None:
        self._core = weakref.ref(core)

    def light_on(self) -> bool:
        """Light reaches the sample when the shutter is open or autoshutter opens it."""
        if self.shutter.get_open():
            return True
        core = self._core() if self._core is not None else None
        return bool(core is not None and core.getAutoShutter())

    def state(self, exposure_ms: float, binning: int, t_s: float | None = None) -> ScopeState:
        x, y = self.xy.physical_position
        return ScopeState(
            x_um=x,
            y_um=y,
            z_um=self.focus.physical_position,
            objective=self.objectives.objective,
            channel=self.light.channel,
            exposure_ms=exposure_ms,
            intensity_pct=self.light.intensity,
            binning=binning,
            illuminated=self.light_on(),
            t_s=self.clock.now() if t_s is None else t_s,
        )

    def expose(
        self, state: ScopeState, out: np.ndarray | None = None, add_dose: bool = True
    ) -> np.ndarray:
        """Render a frame; fluorescence light that reached the sample bleaches it."""
        with self._lock:
            frame, cells = self.renderer.render(state, out)
        if (
            add_dose
            and len(cells)
            and state.illuminated
            and state.channel in FLUORESCENCE_CHANNELS
            and state.intensity_pct > 0
        ):
            # the field stop matches the camera: cells whose centre is in the frame get light
            x0, y0, x1, y1 = self.renderer.field_of_view(state)
            x, y = cells.x_um, cells.y_um
            lit = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
            dose = state.exposure_ms * state.intensity_pct / 100.0
            self.renderer.sample.add_dose_to(cells.ids[lit], state.channel, dose)
        return frame


class SimCamera(SimpleCameraDevice):
    """16-bit scientific camera that images the virtual sample."""

    def __init__(self, rig: Rig) -> None:
        super().__init__()
        self._rig = rig
        self._exposure = 10.0
        self._binning = 1
        self._frames = 0
        self.set_property_allowed_values("Binning", list(ALLOWED_BINNING))
        self.set_property_limits("Exposure", (0.001, 60_000.0))

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        if not 0 < exposure <= 60_000:
            raise HardwareError(f"exposure {exposure} ms is outside 0.001..60000 ms")
        self._exposure = float(exposure)

    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: int) -> None:
        value = int(value)
        if value not in ALLOWED_BINNING:
            raise HardwareError(f"binning {value} is not supported; use one of {ALLOWED_BINNING}")
        self._binning = value

    def sensor_shape(self) -> tuple[int, int]:
        cfg = self._rig.config
        return cfg.height // self._binning, cfg.width // self._binning

    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16)

    def snap(self, buffer: np.ndarray) -> Mapping:
        if self._rig.faults.take("snap"):
            raise HardwareError(
                "simulated fault: camera read-out timed out (injected with POST /v1/sim/faults)"
            )
        state = self._rig.state(self._exposure, self._binning)
        self._rig.expose(state, out=buffer)
        self._frames += 1
        return {
            "SimTime_s": f"{state.t_s:.3f}",
            "SimChannel": state.channel,
            "SimIlluminated": str(int(state.illuminated)),
        }
