"""The envelope at run time: checked again when an event is set up and when its frame is taken.

A command is checked against the envelope when it is submitted, from the settings then; by the
time its events run, direct commands may have changed the channel, exposure, intensity or stage,
and a hardware autofocus may have added a correction to every later Z. So the engine asks this
guard, under the hardware lock:

- before it moves anything for an event (`before_setup`): is every position the event will be
  set up at, correction included, and the position of any axis it leaves where it is, inside?
- before each exposure (`before_exposure`): is the stage inside, and does the dose of the
  settings in force (channel's power x intensity x exposure) fit in the budget? The dose is
  charged to the persistent `DoseLedger` then, before the light is on.

A refusal is an `EnvelopeViolation`; the engine turns it into a failed event (no retry).
"""

from __future__ import annotations

import threading
from typing import Any

import useq
from pymmcore_plus import CMMCorePlus

from scopeflow import EnvelopeViolation, JournalError

from ._dose import DoseLedger, Exposure
from ._envelope import SafetyEnvelope

__all__ = ["EnvelopeGuard"]


class EnvelopeGuard:
    """Checks events against ``envelope`` from the microscope's actual state."""

    def __init__(
        self,
        core: CMMCorePlus,
        envelope: SafetyEnvelope,
        ledger: DoseLedger,
        *,
        channel_group: str,
        intensity_property: tuple[str, str],
    ) -> None:
        self.core = core
        self.envelope = envelope
        self.ledger = ledger
        self._channel_group = channel_group
        self._intensity_property = intensity_property
        self._last = threading.local()

    @property
    def last_exposure(self) -> Exposure | None:
        """The exposure last admitted on this thread (the acquisition thread's frames)."""
        return getattr(self._last, "exposure", None)

    def stage(self) -> tuple[float, float, float]:
        x, y = self.core.getXYPosition()
        return float(x), float(y), float(self.core.getPosition())

    def before_setup(self, event: useq.MDAEvent, z_correction: float = 0.0) -> None:
        """Refuse an event whose set-up would put the stage outside the envelope."""
        z = None if event.z_pos is None else event.z_pos + z_correction
        what = "the stage position this event is set up at"
        if z_correction and event.z_pos is not None:
            what += f" (Z {event.z_pos:g} + autofocus correction {z_correction:g})"
        self.envelope.check_move(self.stage(), event.x_pos, event.y_pos, z, what)
        for sub in getattr(event, "events", ()):  # a hardware-sequenced event's own events
            self.envelope.check_position(sub.x_pos, sub.y_pos, sub.z_pos, "a sequenced event")

    def before_exposure(self, event: useq.MDAEvent) -> Exposure:
        """Check the stage and charge the dose of the settings in force, or refuse."""
        self.envelope.check_position(*self.stage(), "the stage position of this exposure")
        frames = max(1, len(getattr(event, "events", ())))
        exposure = self._settings_in_force(frames)
        try:
            charged = self.ledger.charge(exposure.dose_mj, self.envelope.light_dose_budget_mj)
        except JournalError as exc:
            raise EnvelopeViolation(
                f"{exc}; no frame is taken while the dose cannot be recorded",
                limit="light_dose_budget_mj",
                value=None,
            ) from exc
        if not charged:
            budget = self.envelope.light_dose_budget_mj
            left = budget - self.ledger.used_mj
            raise EnvelopeViolation(
                f"light dose: this exposure needs {exposure.dose_mj:.3g} mJ (channel "
                f"{exposure.channel}, {exposure.power_mw:g} mW at 100 %, intensity "
                f"{_percent(exposure.intensity)}, {exposure.exposure_ms:g} ms, with the settings "
                f"in force when it was to be taken) but only {left:.3g} mJ of the envelope's "
                f"light_dose_budget_mj {budget:g} is left; lower exposure or intensity, or use a "
                "new sample with a new budget (a new data dir)",
                limit="light_dose_budget_mj",
                value=round(exposure.dose_mj, 6),
            )
        self._last.exposure = exposure
        return exposure

    def charge_device(self, dose_mj: float, what: str) -> None:
        """Charge the light dose of a device action (a stimulation pattern) before its light
        goes on, or refuse it (`tasks.hardware._device_runner`)."""
        try:
            charged = self.ledger.charge(dose_mj, self.envelope.light_dose_budget_mj)
        except JournalError as exc:
            raise EnvelopeViolation(
                f"{exc}; no light is switched on while the dose cannot be recorded",
                limit="light_dose_budget_mj",
                value=None,
            ) from exc
        if not charged:
            budget = self.envelope.light_dose_budget_mj
            raise EnvelopeViolation(
                f"light dose: {what} needs {dose_mj:.3g} mJ but only "
                f"{budget - self.ledger.used_mj:.3g} mJ of the envelope's light_dose_budget_mj "
                f"{budget:g} is left; lower its intensity, duration or area, or use a new "
                "sample with a new budget (a new data dir)",
                limit="light_dose_budget_mj",
                value=round(dose_mj, 6),
            )

    def _settings_in_force(self, frames: int) -> Exposure:
        core, env = self.core, self.envelope
        channel = core.getCurrentConfig(self._channel_group) or None
        exposure_ms = float(core.getExposure())
        intensity = _intensity(core, *self._intensity_property)
        where = "the settings in force for this exposure"
        power, dose = env.exposure_dose(channel, exposure_ms, intensity, where, frames)
        return Exposure(channel, exposure_ms, intensity, power, dose)


def _intensity(core: CMMCorePlus, device: str, prop: str) -> float | None:
    try:
        return float(core.getProperty(device, prop))
    except (RuntimeError, ValueError, TypeError):
        return None


def _percent(intensity: Any) -> str:
    return "unknown (counted as 100 %)" if intensity is None else f"{intensity:g} %"
