"""Assemble the simulated microscope into a ready-to-use UniMMCore."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pymmcore_plus import Keyword
from pymmcore_plus.experimental.unicore import UniMMCore

from ._clock import SimClock
from ._config import SimulatorConfig
from ._devices import (
    Rig,
    SimCamera,
    SimFocus,
    SimIllumination,
    SimObjectives,
    SimShutter,
    SimXYStage,
)
from ._render import CHANNELS, Renderer, ScopeState
from ._sample import CellTable, Region, VirtualSample

__all__ = ["DEVICE_LABELS", "Simulation", "build_simulated_core"]

DEVICE_LABELS = {
    "camera": "Camera",
    "xy": "XY",
    "focus": "Z",
    "shutter": "Shutter",
    "light": "Illumination",
    "objective": "Objective",
}
CHANNEL_GROUP = "Channel"
OBJECTIVE_GROUP = "Objective"


class _SimulatedCore(UniMMCore):
    """UniMMCore whose pixel-size configs may refer to Python devices.

    The C++ core matches pixel-size configs only against C++ devices, so the current config
    is resolved here against live property values.
    """

    def getCurrentPixelSizeConfig(self, cached: bool = False) -> str:  # type: ignore[override]
        for res_id in self.getAvailablePixelSizeConfigs():
            settings = self.getPixelSizeConfigData(res_id)  # (device, property, value) items
            if all(str(self.getProperty(dev, prop)) == str(val) for dev, prop, val in settings):
                return res_id
        return ""

    def _binning_factor(self) -> float:
        cam = self._py_camera()
        binning = float(cam.get_property_value(Keyword.Binning)) if cam is not None else 1.0
        return binning / self.getMagnificationFactor()

    def getPixelSizeUm(self, cached: bool = False) -> float:  # type: ignore[override]
        if not (res_id := self.getCurrentPixelSizeConfig(cached)):
            return 0.0
        return self.getPixelSizeUmByID(res_id) * self._binning_factor()

    def getPixelSizeAffine(  # type: ignore[override]
        self, cached: bool = False
    ) -> tuple[float, float, float, float, float, float]:
        if not (res_id := self.getCurrentPixelSizeConfig(cached)):
            return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        f = self._binning_factor()
        a = self.getPixelSizeAffineByID(res_id)
        return (a[0] * f, a[1] * f, a[2], a[3] * f, a[4] * f, a[5])


class Simulation:
    """Handle on the simulated microscope behind a core: config, ground truth, clock, renderer."""

    def __init__(self, rig: Rig, camera: SimCamera) -> None:
        self.config: SimulatorConfig = rig.config
        self.renderer: Renderer = rig.renderer
        self.sample: VirtualSample = rig.renderer.sample
        self.clock: SimClock = rig.clock
        self._rig = rig
        self._camera = camera

    def inject_faults(self, *, snap: int = 0, stage: int = 0, hang: int = 0) -> dict[str, int]:
        """Make the next ``snap`` snaps and the next ``stage`` XY moves fail (a device error, as
        a real camera or stage controller gives), and the next ``hang`` XY moves never finish
        (a device timeout); returns the failures still pending."""
        return self._rig.faults.add(snap=snap, stage=stage, hang=hang)

    def clear_faults(self) -> dict[str, int]:
        return self._rig.faults.clear()

    def truth(self, region: Region | None = None, t_s: float | None = None) -> CellTable:
        """Ground-truth cells in ``region`` (stage µm; default: whole slide) at ``t_s`` (now)."""
        return self.sample.cells_at(self.clock.now() if t_s is None else t_s, region)

    def state(self) -> ScopeState:
        """The live microscope state, as the camera would see it now."""
        return self._rig.state(self._camera.get_exposure(), self._camera.get_binning())

    def field_of_view(self, state: ScopeState | None = None) -> Region:
        """(x0, y0, x1, y1) stage µm covered by the frame's pixel centres."""
        return self.renderer.field_of_view(state or self.state())

    def stage_to_pixel(
        self, x_um: np.ndarray, y_um: np.ndarray, state: ScopeState | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage µm -> (column, row) of the current (or given) frame; honours flip_x/flip_y."""
        return self.renderer.stage_to_pixel(state or self.state(), x_um, y_um)

    def render(self, *, add_dose: bool = False, **overrides: Any) -> np.ndarray:
        """Render a frame directly, without the core (for benchmarks and data generation).

        Starts from the live device state with the light on; keyword ``overrides`` replace
        :class:`ScopeState` fields (``x_um``, ``y_um``, ``z_um``, ``objective``, ``channel``,
        ``exposure_ms``, ``intensity_pct``, ``binning``, ``illuminated``, ``t_s``).
        The sample is bleached only if ``add_dose``.
        """
        base = replace(self.state(), illuminated=True)
        if unknown := set(overrides) - set(base.__dict__):
            raise TypeError(
                f"unknown render settings {sorted(unknown)}; use {sorted(base.__dict__)}"
            )
        return self._rig.expose(replace(base, **overrides), add_dose=add_dose)


def build_simulated_core(
    config: SimulatorConfig | None = None,
) -> tuple[UniMMCore, Simulation]:
    """A UniMMCore with the simulated microscope loaded, initialised and configured.

    Devices: Camera, XY, Z, Shutter, Illumination (BF/DAPI/GFP + Intensity), Objective.
    Groups: "Channel" (BF, DAPI, GFP, and the config's ``channel_presets``: FITC, Cy5) and
    "Objective" (one preset per objective); one pixel-size config per objective. Starts at
    10x, DAPI, 10 ms, 50 %, autoshutter on.
    """
    cfg = config or SimulatorConfig()
    sample = VirtualSample(cfg)
    clock = SimClock(cfg.time_scale)
    renderer = Renderer(sample)
    xy, focus, shutter = SimXYStage(cfg), SimFocus(cfg), SimShutter()
    light, objectives = SimIllumination(cfg.channel_presets), SimObjectives(cfg)
    rig = Rig(cfg, renderer, clock, xy, focus, shutter, light, objectives)
    camera = SimCamera(rig)

    # point the adapter search path at this folder: no C++ adapters are needed, and it stops
    # pymmcore-plus from searching for (and logging an error about) a Micro-Manager install
    core = _SimulatedCore(mm_path=str(Path(__file__).parent))
    labels = DEVICE_LABELS
    for key, dev in (
        ("camera", camera),
        ("xy", xy),
        ("focus", focus),
        ("shutter", shutter),
        ("light", light),
        ("objective", objectives),
    ):
        core.loadPyDevice(labels[key], dev)
    core.initializeAllDevices()
    core.setCameraDevice(labels["camera"])
    core.setXYStageDevice(labels["xy"])
    core.setFocusDevice(labels["focus"])
    core.setShutterDevice(labels["shutter"])
    core.setAutoShutter(True)
    rig.attach_core(core)

    core.defineConfigGroup(CHANNEL_GROUP)
    for ch in CHANNELS:
        core.defineConfig(CHANNEL_GROUP, ch, labels["light"], "Label", ch)
    for preset in cfg.channel_presets:
        if preset not in CHANNELS:
            core.defineConfig(CHANNEL_GROUP, preset, labels["light"], "Label", preset)
    core.setChannelGroup(CHANNEL_GROUP)
    core.defineConfigGroup(OBJECTIVE_GROUP)
    sx = -1.0 if cfg.flip_x else 1.0
    sy = -1.0 if cfg.flip_y else 1.0
    for obj in cfg.objectives:
        core.defineConfig(OBJECTIVE_GROUP, obj, labels["objective"], "Label", obj)
        res = f"Res{obj}"
        px = cfg.pixel_size_um(obj)
        core.definePixelSizeConfig(res, labels["objective"], "Label", obj)
        core.setPixelSizeUm(res, px)
        core.setPixelSizeAffine(res, [sx * px, 0.0, 0.0, 0.0, sy * px, 0.0])

    default_obj = "10x" if "10x" in cfg.objectives else next(iter(cfg.objectives))
    core.setConfig(OBJECTIVE_GROUP, default_obj)
    core.setConfig(CHANNEL_GROUP, "DAPI")
    core.setProperty(labels["light"], "Intensity", 50.0)
    core.setExposure(10.0)

    return core, Simulation(rig, camera)
