"""The test driver of the file-drop protocol: the reference macro (examples/zen_oad_macro.py,
loaded as it is) with the simulated microscope behind it instead of ZEN.

Only the adapter differs from what runs in ZEN; the protocol logic is the macro's own.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import tifffile

from tasks.hardware.sim import Simulation, SimulatorConfig, build_simulated_core

REPO = Path(__file__).resolve().parents[1]
MACRO = REPO / "examples" / "zen_oad_macro.py"


def load_macro() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zen_oad_macro", MACRO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SimAdapter:
    """The simulated microscope in the place of ``ZenAdapter`` (same methods)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.core, self.sim = build_simulated_core(config)
        self.config = config
        self.acquired = 0
        self.aborts = 0
        self.misreport: str | None = None  # the next reply names this channel (error paths)
        self.fail_next: str | None = None  # the next move or acquire raises this (error paths)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        sx = -1.0 if cfg.flip_x else 1.0
        sy = -1.0 if cfg.flip_y else 1.0
        objectives = {
            name: {
                "pixel_size_um": cfg.pixel_size_um(name),
                "affine": [sx * cfg.pixel_size_um(name), 0, 0, 0, sy * cfg.pixel_size_um(name), 0],
            }
            for name in cfg.objectives
        }
        lo, hi = cfg.focus_range_um
        return {
            "name": "simulator behind the reference macro",
            "camera": {"width": cfg.width, "height": cfg.height, "dtype": "uint16"},
            "objectives": objectives,
            "channels": ["BF", "DAPI", "GFP"],
            "stage": {"x": [0, cfg.slide_width_um], "y": [0, cfg.slide_height_um], "z": [lo, hi]},
        }

    def position(self) -> tuple[float, float, float]:
        x, y = self.core.getXYPosition()
        return x, y, self.core.getPosition()

    def current(self) -> tuple[str, str]:
        channel = self.misreport or self.core.getCurrentConfig("Channel")
        self.misreport = None
        return self.core.getCurrentConfig("Objective"), channel

    def move(self, x: float | None, y: float | None, z: float | None) -> None:
        self._maybe_fail()
        if x is not None and y is not None:
            self.core.setXYPosition(x, y)
        if z is not None:
            self.core.setPosition(z)

    def set_objective(self, name: str) -> None:
        self.core.setConfig("Objective", name)

    def set_channel(self, name: str) -> None:
        self.core.setConfig("Channel", name)

    def acquire(self, exposure_ms: float | None, intensity: float | None, path: str) -> None:
        self._maybe_fail()
        if exposure_ms is not None:
            self.core.setExposure(exposure_ms)
        if intensity is not None:
            self.core.setProperty("Illumination", "Intensity", intensity)
        self.core.snapImage()
        tifffile.imwrite(path, self.core.getImage())
        self.acquired += 1

    def _maybe_fail(self) -> None:
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise RuntimeError(message)

    def abort(self) -> None:
        self.aborts += 1


class MacroThread:
    """``with MacroThread(drop, config) as macro:`` the reference macro answering in a thread."""

    def __init__(self, drop_dir: Path, config: SimulatorConfig, poll_s: float = 0.005) -> None:
        self.adapter = SimAdapter(config)
        self.macro = load_macro().DropMacro(str(drop_dir), self.adapter, poll_s=poll_s)
        self._running = True
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="file-drop-macro", daemon=True)

    @property
    def sim(self) -> Simulation:
        return self.adapter.sim

    def _run(self) -> None:
        try:
            self.macro.run(lambda: self._running)
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def __enter__(self) -> MacroThread:
        self.macro.start()  # hello.json exists before the edge looks for it
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join(10)
        self.adapter.core.unloadAllDevices()
        if self.error is not None:
            raise self.error
