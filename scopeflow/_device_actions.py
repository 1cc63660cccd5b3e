"""External devices on an event: a fluidics pump run and a patterned light stimulation.

They travel as useq-schema's own extension point, ``useq.CustomAction`` on an ``MDAEvent``
(``name`` is the payload's ``type``, ``data`` the payload), so they queue, run in order with
the acquisitions around them, and carry the command id of the command that submitted them. The
payloads are typed here and validated at the edge, which checks each against its envelope's
per-device limits (`SafetyEnvelope.devices`).

>>> event = pump_event(PumpRun(reservoir="drug", volume_ul=40, flow_ul_per_min=200))
>>> device_action(event.action).volume_ul
40.0
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import useq
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ._errors import InvalidRequest

__all__ = [
    "DeviceAction",
    "PumpRun",
    "Stimulate",
    "StimulationSpot",
    "device_action",
    "pump_event",
    "stimulation_event",
]


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PumpRun(_Payload):
    """Dispense ``volume_ul`` of ``reservoir`` into the chamber at ``flow_ul_per_min`` with the
    syringe pump ``device`` (it runs on while the next events image)."""

    type: Literal["pump"] = "pump"
    device: str = Field("Pump", min_length=1, max_length=64)
    reservoir: str = Field(min_length=1, max_length=64)
    volume_ul: float = Field(gt=0)
    flow_ul_per_min: float = Field(gt=0)


class StimulationSpot(_Payload):
    """A disc of the pattern, in stage µm (a cell's centre and radius)."""

    x_um: float
    y_um: float
    radius_um: float = Field(gt=0)


class Stimulate(_Payload):
    """Light the ``spots`` through the patterning device ``device`` (a DMD or SLM registered to
    the camera's field) for ``duration_ms`` at ``intensity`` % of its light source."""

    type: Literal["stimulate"] = "stimulate"
    device: str = Field("DMD", min_length=1, max_length=64)
    spots: tuple[StimulationSpot, ...] = Field(min_length=1, max_length=256)
    intensity: float = Field(ge=0, le=100)
    duration_ms: float = Field(gt=0)

    def area_um2(self) -> float:
        """The spots' total area (overlaps counted twice: never less than what is lit)."""
        return sum(3.141592653589793 * s.radius_um**2 for s in self.spots)


DeviceAction = Annotated[PumpRun | Stimulate, Field(discriminator="type")]
_ADAPTER: TypeAdapter[PumpRun | Stimulate] = TypeAdapter(DeviceAction)
DEVICE_ACTION_NAMES = ("pump", "stimulate")


def _event(payload: PumpRun | Stimulate, **event: Any) -> useq.MDAEvent:
    action = useq.CustomAction(name=payload.type, data=payload.model_dump(mode="json"))
    return useq.MDAEvent(action=action, **event)


def pump_event(run: PumpRun, **event: Any) -> useq.MDAEvent:
    """An event that runs the pump (``event``: more MDAEvent fields, e.g. ``index``)."""
    return _event(run, **event)


def stimulation_event(stimulate: Stimulate, **event: Any) -> useq.MDAEvent:
    """An event that fires a stimulation pattern (``x_pos``/``y_pos`` in ``event`` move the
    stage there first; the spots must lie in the field of view at that position)."""
    return _event(stimulate, **event)


def device_action(action: useq.CustomAction) -> PumpRun | Stimulate:
    """The typed payload of a custom action; `InvalidRequest` (422) for one that is not a
    known device action or whose payload does not validate."""
    if action.name not in DEVICE_ACTION_NAMES:
        raise InvalidRequest(
            f"custom action {action.name!r} is not a device action this edge runs; use one of "
            f"{list(DEVICE_ACTION_NAMES)} (scopeflow.pump_event, scopeflow.stimulation_event)",
            limit="custom_action",
            value=action.name[:80],
        )
    data = dict(action.data)
    if data.setdefault("type", action.name) != action.name:
        raise InvalidRequest(
            f"custom action {action.name!r} carries a {data['type']!r} payload; make its name "
            "and its data's type the same",
            limit="custom_action",
            value=str(data["type"])[:80],
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(
            f"custom action {action.name!r}: {problems}",
            limit="custom_action",
            value=None,
        ) from None
