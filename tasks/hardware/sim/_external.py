"""The simulated microscope's external devices: a syringe pump ("Pump") and a DMD ("DMD"),
loaded into a core built by ``build_simulated_core`` and wired to its sample.

>>> core, sim = build_simulated_core(SimulatorConfig(width=512, height=512))
>>> devices = add_external_devices(core, sim)
>>> devices.truth(sim.clock.now())["perfusion"]["infusions"]
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymmcore_plus.experimental.unicore import UniMMCore

from ._core import Simulation
from ._perfusion import BiologyClock, Chamber, PerfusionConfig, SimPump
from ._stimulation import Reporter, SimDMD, StimulationConfig

__all__ = ["EXTERNAL_DEVICE_LABELS", "ExternalDevices", "add_external_devices"]

EXTERNAL_DEVICE_LABELS = {"pump": "Pump", "dmd": "DMD"}


@dataclass(frozen=True)
class ExternalDevices:
    """The pump's chamber and the DMD's reporter: the ground truth of what they did."""

    chamber: Chamber
    reporter: Reporter

    def truth(self, t_s: float) -> dict[str, Any]:
        """Infusions, the biological clock, stimulation patterns and stimulated cells at
        ``t_s``."""
        return {"perfusion": self.chamber.truth(t_s), "stimulation": self.reporter.truth(t_s)}


def add_external_devices(
    core: UniMMCore,
    simulation: Simulation,
    perfusion: PerfusionConfig | None = None,
    stimulation: StimulationConfig | None = None,
) -> ExternalDevices:
    """Load the pump and the DMD into ``core`` (the DMD becomes its SLM device) and make the
    sample follow them: its biology on the chamber's clock, its GFP through the reporter."""
    biology = BiologyClock()
    chamber = Chamber(perfusion or PerfusionConfig(), biology)
    reporter = Reporter(stimulation or StimulationConfig())
    rig = simulation._rig  # noqa: SLF001 - same package: the devices share the camera's rig
    labels = EXTERNAL_DEVICE_LABELS
    core.loadPyDevice(labels["pump"], SimPump(chamber, simulation.clock))
    core.loadPyDevice(labels["dmd"], SimDMD(rig, reporter))
    core.initializeDevice(labels["pump"])
    core.initializeDevice(labels["dmd"])
    core.setSLMDevice(labels["dmd"])
    sample = simulation.sample
    sample.biological_time = biology.tau
    sample.real_time = biology.real
    sample.gfp_gain = reporter.gfp_gain
    return ExternalDevices(chamber, reporter)
