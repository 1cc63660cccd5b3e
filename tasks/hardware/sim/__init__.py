"""A simulated microscope (pure-Python unicore devices over a virtual sample) and the loader
for a real Micro-Manager configuration.

>>> core, sim = build_simulated_core(SimulatorConfig(width=512, height=512))
>>> core.snapImage(); frame = core.getImage()
>>> truth = sim.truth(sim.field_of_view())
"""

import logging

_root_level = logging.getLogger().level

from ._clock import SimClock  # noqa: E402
from ._config import SimulatorConfig  # noqa: E402
from ._core import Simulation, build_simulated_core  # noqa: E402
from ._drift import FocusDrift, focus_drift_um  # noqa: E402
from ._external import EXTERNAL_DEVICE_LABELS, ExternalDevices, add_external_devices  # noqa: E402
from ._micromanager import load_micromanager_core  # noqa: E402
from ._perfusion import BiologyClock, PerfusionConfig, Reservoir  # noqa: E402
from ._plate_layout import WellLayout, well_layout  # noqa: E402
from ._render import Renderer, ScopeState, numerical_aperture  # noqa: E402
from ._sample import CellTable, Division, VirtualSample  # noqa: E402
from ._sprites import outline_distance as nucleus_outline_distance  # noqa: E402
from ._sprites import quantize_size, size_from_bin  # noqa: E402
from ._stimulation import StimulationConfig  # noqa: E402
from ._truth_labels import truth_labels  # noqa: E402

# pymmcore-plus sets the root logger to DEBUG when imported, which floods a user's terminal with
# every library's debug lines; give the process back the level it had
logging.getLogger().setLevel(_root_level)

__all__ = [
    "EXTERNAL_DEVICE_LABELS",
    "BiologyClock",
    "CellTable",
    "Division",
    "ExternalDevices",
    "FocusDrift",
    "PerfusionConfig",
    "Renderer",
    "Reservoir",
    "ScopeState",
    "SimClock",
    "Simulation",
    "SimulatorConfig",
    "StimulationConfig",
    "VirtualSample",
    "WellLayout",
    "add_external_devices",
    "build_simulated_core",
    "focus_drift_um",
    "load_micromanager_core",
    "nucleus_outline_distance",
    "numerical_aperture",
    "quantize_size",
    "size_from_bin",
    "truth_labels",
    "well_layout",
]
