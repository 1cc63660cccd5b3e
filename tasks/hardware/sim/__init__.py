"""A simulated microscope (pure-Python unicore devices over a virtual sample) and the loader
for a real Micro-Manager configuration.

>>> core, sim = build_simulated_core(SimulatorConfig(width=512, height=512))
>>> core.snapImage(); frame = core.getImage()
>>> truth = sim.truth(sim.field_of_view())
"""

from ._clock import SimClock
from ._config import SimulatorConfig
from ._core import Simulation, build_simulated_core
from ._micromanager import load_micromanager_core
from ._render import Renderer, ScopeState
from ._sample import CellTable, Division, VirtualSample

__all__ = [
    "CellTable",
    "Division",
    "Renderer",
    "ScopeState",
    "SimClock",
    "Simulation",
    "SimulatorConfig",
    "VirtualSample",
    "build_simulated_core",
    "load_micromanager_core",
]
