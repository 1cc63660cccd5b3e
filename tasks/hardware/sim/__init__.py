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
from ._render import Renderer, ScopeState, numerical_aperture
from ._sample import CellTable, Division, VirtualSample
from ._sprites import outline_distance as nucleus_outline_distance
from ._sprites import quantize_size, size_from_bin
from ._truth_labels import truth_labels

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
    "nucleus_outline_distance",
    "numerical_aperture",
    "quantize_size",
    "size_from_bin",
    "truth_labels",
]
