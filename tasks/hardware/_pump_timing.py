"""Refuse, when a command is submitted, a pump run that is certain to start while its pump is
still dispensing (the pump itself refuses such a run when it comes up; this says so up front).

A pump run takes no time on the acquisition thread (the pump dispenses in the background), but
any other event may take arbitrarily long, so a start time is known only up to the next event
that is not a pump run. Overlap is certain, and the run refused, when between the two runs
there are only pump runs, and

- in one command: the later run's ``min_start_time`` (the latest of those before it; the
  command's timer starts with it) is before the earlier run's ``min_start_time`` + its
  duration (volume / flow, in the device's time);
- against the run dispensing now: the queue is empty, nothing is running, and the run's
  ``min_start_time`` is before the pump's busy-until.

Anything else is left to the check when the run comes up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import useq

from scopeflow import EnvelopeViolation, PumpRun, device_action

from ._pump_ledger import PumpLedger

__all__ = ["check_pump_timing", "pump_run_of"]

_NOW = "(its run now)"


def pump_run_of(event: useq.MDAEvent) -> PumpRun | None:
    """The pump run ``event`` carries, if any."""
    if not isinstance(event.action, useq.CustomAction):
        return None
    action = device_action(event.action)
    return action if isinstance(action, PumpRun) else None


def check_pump_timing(
    events: Sequence[useq.MDAEvent], ledger: PumpLedger, *, time_scale: float, idle: bool
) -> None:
    """Raise `EnvelopeViolation` (limit ``devices.pumps.<pump>.busy``) for the first run certain
    to overlap the one before on its pump."""
    ends: dict[str, tuple[float, str]] = {}  # pump -> (earliest end, s from now; what runs)
    if idle:
        for event in events:
            run = pump_run_of(event)
            if run is not None and run.device not in ends:
                busy = ledger.busy_for_s(run.device)
                if busy > 0:
                    ends[run.device] = (busy, _NOW)
    earliest = 0.0  # when the next event starts at the earliest (s from the command's start)
    for i, event in enumerate(events):
        run = pump_run_of(event)
        if run is None:
            ends.clear()  # this event may take any time: nothing after it is certain
            continue
        earliest = max(earliest, event.min_start_time or 0.0)
        if run.device in ends and earliest < ends[run.device][0]:
            _refuse(i, run, earliest, *ends[run.device])
        seconds = run.volume_ul / run.flow_ul_per_min * 60.0 / time_scale
        ends[run.device] = (earliest + seconds, f"the run of event {i}")


def _refuse(i: int, run: PumpRun, start: float, end: float, what: str) -> None:
    later = math.ceil(end * 1000) / 1000
    fix = f"give event {i} a min_start_time of at least {later:g} s (the command's timer starts "
    if what == _NOW:
        until = datetime.now(UTC) + timedelta(seconds=end)
        stamp = until.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        busy = f"is still dispensing {what} until {stamp}, {end:.3g} s from now"
        fix += f"with its first event), or send it after {stamp}"
        value: dict[str, object] = {"busy_until": stamp, "busy_for_s": round(end, 3)}
    else:
        busy = f"will still be dispensing {what} until {end:.4g} s on the command's timer"
        fix += "with its first event), or send it in a later command once that run is done"
        value = {"busy_until_s": round(end, 3)}
    raise EnvelopeViolation(
        f"event {i}: pump {run.device!r} {busy}, and this run would start at {start:g} s at "
        f"the latest; a pump takes no new run until it is done: {fix}",
        limit=f"devices.pumps.{run.device}.busy",
        value=value,
    )
