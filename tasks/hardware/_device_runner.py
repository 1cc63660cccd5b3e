"""Runs a device action (a pump run, a stimulation pattern) when its event comes up.

Called by the engine under the hardware lock. The action was checked against the envelope when
it was queued; it is checked again here from the microscope as it is now (the stage may have
moved since), and a stimulation's light dose is charged to the dose ledger before the pattern
is displayed. Then the device is driven through the core, as Micro-Manager devices are:

- a pump (a generic device): its volume charged to the sample's `PumpLedger` (refused past the
  envelope's cumulative limit), then ``Reservoir``, ``Volume_uL``, ``FlowRate_uL_per_min`` and
  ``Command`` = ``Dispense``; the pump runs on while the next events image (a run that comes
  up while ``Command`` still reads ``Dispense`` is refused, nothing charged);
- a patterning device (an SLM/DMD registered to the camera's field at binning 1): the spots
  drawn into a mask, ``setSLMImage``, ``setSLMExposure`` (the duration), its ``Intensity``,
  ``displaySLMImage``, and a wait until the pattern is over.
"""

from __future__ import annotations

import useq
from pymmcore_plus import CMMCorePlus

from scopeflow import HardwareError, PumpRun, Stimulate, device_action

from ._guard import EnvelopeGuard
from ._pattern import pattern_mask
from ._pump_ledger import PumpLedger

__all__ = ["DeviceActionRunner", "field_of_view_um"]


def field_of_view_um(core: CMMCorePlus) -> tuple[float, float] | None:
    """The camera's field of view (width, height) in µm; None when the pixel size is unknown."""
    px = core.getPixelSizeUm()
    if not px > 0:
        return None
    return core.getImageWidth() * px, core.getImageHeight() * px


def _binning(core: CMMCorePlus) -> float:
    try:
        return float(core.getProperty(core.getCameraDevice(), "Binning"))
    except (RuntimeError, ValueError, KeyError):
        return 1.0


class DeviceActionRunner:
    """The engine's hook for `useq.CustomAction` events (see the module docstring)."""

    def __init__(
        self,
        core: CMMCorePlus,
        guard: EnvelopeGuard,
        pumps: PumpLedger,
        time_scale: float = 1.0,
    ) -> None:
        self.core = core
        self.guard = guard
        self.pumps = pumps
        self.time_scale = time_scale  # device seconds per second (a simulation may run faster)

    def run(self, event: useq.MDAEvent) -> None:
        """Check, charge and drive; raises `EnvelopeViolation` (nothing was driven) or the
        device's error."""
        assert isinstance(event.action, useq.CustomAction)
        action = device_action(event.action)
        envelope, where = self.guard.envelope, "this device action as the microscope is now"
        x, y, z = self.guard.stage()
        envelope.check_position(x, y, z, where)
        dose = envelope.devices.check(action, (x, y), field_of_view_um(self.core), where)
        if isinstance(action, PumpRun):
            self._check_idle(action)
            # on disk before it pumps; a run that then fails in the pump stays counted (it may
            # have pumped part of its volume)
            self.pumps.charge(action, envelope.devices.pumps)
            self._pump(action)
            self.pumps.dispensing(action, self.time_scale)
            return
        self.guard.charge_device(dose, f"the stimulation pattern on {action.device!r}")
        self._stimulate(action, (x, y))

    def _check_idle(self, run: PumpRun) -> None:
        """The last line of defence against overlapping runs: the pump's own ``Command`` reads
        ``Dispense`` until its last run is in."""
        if self.core.getProperty(run.device, "Command") == "Dispense":
            busy = self.pumps.busy_for_s(run.device)
            raise HardwareError(
                f"pump {run.device!r} is still dispensing its last run (about {busy:.3g} s "
                "more); nothing was pumped or counted: give this run a later min_start_time, "
                "or send it again once the pump is idle"
            )

    def _pump(self, run: PumpRun) -> None:
        core = self.core
        core.setProperty(run.device, "Reservoir", run.reservoir)
        core.setProperty(run.device, "Volume_uL", run.volume_ul)
        core.setProperty(run.device, "FlowRate_uL_per_min", run.flow_ul_per_min)
        core.setProperty(run.device, "Command", "Dispense")

    def _stimulate(self, stimulate: Stimulate, stage: tuple[float, float]) -> None:
        core, device = self.core, stimulate.device
        binning = _binning(core)
        affine = tuple(v / binning for v in core.getPixelSizeAffine())
        shape = (core.getSLMHeight(device), core.getSLMWidth(device))
        mask = pattern_mask(stimulate, stage, affine, shape)  # type: ignore[arg-type]
        core.setSLMImage(device, mask)
        core.setSLMExposure(device, stimulate.duration_ms)
        core.setProperty(device, "Intensity", stimulate.intensity)
        core.displaySLMImage(device)
        core.waitForDevice(device)
