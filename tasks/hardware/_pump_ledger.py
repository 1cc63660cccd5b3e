"""The volume each pump has put into the sample, kept on disk so that a restart does not reset it,
and when each pump will be done dispensing.

``pumps.json`` in the edge's data dir holds, per pump, the volume dispensed so far in integer
nanolitres (sums stay exact), in all and per reservoir. A run is charged (written atomically: a
temporary file, then a rename) before the pump is told to dispense, so a crash never loses a
volume that was pumped (a run that then fails in the pump stays counted: it may have pumped
part of its volume). Like the light dose ledger, the
volume belongs to the sample: a new sample starts with a new data dir (or with ``pumps.json``
deleted), nothing else resets it.

Runs still in the queue are *reserved* (in memory): a command is refused when the volume used,
the volume reserved and its own runs would pass a limit, so an accepted command never waits in
the queue for a run that cannot be pumped.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scopeflow import EnvelopeViolation, JournalError, PumpRun

from ._device_envelope import PumpLimits

__all__ = ["PumpLedger", "PumpUse"]

_Key = tuple[str, str]  # (pump, reservoir)


def nanolitres(ul: float) -> int:
    """A run's volume in whole nL, rounded up (a run is never counted as less than it pumps)."""
    return math.ceil(round(ul * 1000, 6))


def _cap_nl(ul: float) -> int:
    """A limit in whole nL, rounded down (what is counted never passes it)."""
    return math.floor(round(ul * 1000, 6))


@dataclass(frozen=True, slots=True)
class PumpUse:
    """What one pump has dispensed (µL), in all and per reservoir."""

    total_ul: float
    by_reservoir_ul: dict[str, float]


class PumpLedger:
    """The dispensed and reserved volumes of one edge data dir, and the pumps' busy-until times
    (thread-safe)."""

    FILE = "pumps.json"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / self.FILE
        self._lock = threading.Lock()
        self._used: dict[_Key, int] = self._load()
        self._reserved: dict[_Key, int] = {}
        self._busy_until: dict[str, float] = {}  # time.monotonic() at which a run ends

    # the volume -------------------------------------------------------------------------------

    def use(self, pump: str) -> PumpUse:
        with self._lock:
            by = {r: nl / 1000 for (p, r), nl in self._used.items() if p == pump}
        return PumpUse(sum(by.values()), by)

    def reserve(self, runs: Iterable[PumpRun], limits: Mapping[str, PumpLimits]) -> None:
        """Reserve the volume of a command's runs, or refuse them all (`EnvelopeViolation`)."""
        extra: dict[_Key, int] = {}
        for run in runs:
            key = (run.device, run.reservoir)
            extra[key] = extra.get(key, 0) + nanolitres(run.volume_ul)
        with self._lock:
            self._check(extra, limits, reserved=True)
            for key, nl in extra.items():
                self._reserved[key] = self._reserved.get(key, 0) + nl

    def release(self, run: PumpRun) -> None:
        """A queued run left the queue (it runs now, or was dropped)."""
        key = (run.device, run.reservoir)
        with self._lock:
            left = self._reserved.get(key, 0) - nanolitres(run.volume_ul)
            if left > 0:
                self._reserved[key] = left
            else:
                self._reserved.pop(key, None)

    def charge(self, run: PumpRun, limits: Mapping[str, PumpLimits]) -> None:
        """Write ``run``'s volume to disk before it is pumped, or refuse it."""
        key = (run.device, run.reservoir)
        extra = nanolitres(run.volume_ul)
        with self._lock:
            self._check({key: extra}, limits, reserved=False)
            used = dict(self._used)
            used[key] = used.get(key, 0) + extra
            self._write(used, "no pump runs while its volume cannot be recorded")
            self._used = used

    def _check(
        self, extra: Mapping[_Key, int], limits: Mapping[str, PumpLimits], *, reserved: bool
    ) -> None:
        for pump in sorted({p for p, _ in extra}):
            pump_limits = limits.get(pump)
            if pump_limits is None:
                continue  # not an allowed pump: DeviceLimits refuses it
            adding = sum(nl for (p, _), nl in extra.items() if p == pump)
            for (p, reservoir), nl in sorted(extra.items()):  # the narrower limit first
                if p == pump:
                    cap = pump_limits.max_total_volume_ul_by_reservoir.get(reservoir)
                    self._check_one(pump, reservoir, nl, cap, reserved=reserved)
            self._check_one(pump, None, adding, pump_limits.max_total_volume_ul, reserved=reserved)

    def _check_one(
        self, pump: str, reservoir: str | None, adding: int, cap_ul: float | None, *, reserved: bool
    ) -> None:
        if cap_ul is None:
            return

        def total(table: Mapping[_Key, int]) -> int:
            return sum(nl for (p, r), nl in table.items() if p == pump and reservoir in (None, r))

        used, queued = total(self._used), total(self._reserved) if reserved else 0
        if used + queued + adding <= _cap_nl(cap_ul):
            return
        name = f"devices.pumps.{pump}.max_total_volume_ul"
        what = f"pump {pump!r}"
        if reservoir is not None:
            name += f"_by_reservoir.{reservoir}"
            what += f" from reservoir {reservoir!r}"
        left = max(0, _cap_nl(cap_ul) - used - queued) / 1000
        waiting = f", {queued / 1000:g} µL more in queued runs" if queued else ""
        raise EnvelopeViolation(
            f"cumulative volume: {adding / 1000:g} µL more by {what} would pass the envelope's "
            f"{name} {cap_ul:g} µL for this sample: {used / 1000:g} µL used{waiting}, "
            f"{left:g} µL left; pump at most {left:g} µL, or, for a new sample, start a new "
            f"budget (a new data dir, or delete {self.path.name} in it)",
            limit=name,
            value={"requested_ul": adding / 1000, "used_ul": used / 1000, "left_ul": left},
        )

    def _write(self, used: Mapping[_Key, int], consequence: str) -> None:
        pumps: dict[str, dict[str, int]] = {}
        for (pump, reservoir), nl in sorted(used.items()):
            pumps.setdefault(pump, {})[reservoir] = nl
        tmp = self.path.with_suffix(".json.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"dispensed_nl": pumps, "unit": "nL"})
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise EnvelopeViolation(
                f"cannot write the pump volume ledger {self.path}: {exc}; {consequence}",
                limit="devices.pumps",
                value=None,
            ) from exc

    def _load(self) -> dict[_Key, int]:
        if not self.path.exists():
            return {}
        fix = "restore the file, or, if the sample was changed, delete it to start a new budget"
        try:
            pumps = json.loads(self.path.read_text(encoding="utf-8"))["dispensed_nl"]
            used = {(str(p), str(r)): nl for p, table in pumps.items() for r, nl in table.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise JournalError(
                f"the pump volume ledger {self.path} cannot be read ({exc}); the volume pumped "
                f"into the sample so far is unknown, so the edge refuses to start: {fix}"
            ) from exc
        bad = [v for v in used.values() if not isinstance(v, int) or v < 0]
        if bad:
            raise JournalError(
                f"the pump volume ledger {self.path} holds {bad[0]!r}, not a volume in "
                f"nanolitres: {fix}"
            )
        return used

    # busy-until -------------------------------------------------------------------------------

    def dispensing(self, run: PumpRun, time_scale: float) -> None:
        """The pump was told to dispense ``run`` now; it is busy for volume / flow (in the
        device's time, ``time_scale`` device seconds per second)."""
        seconds = run.volume_ul / run.flow_ul_per_min * 60.0 / time_scale
        with self._lock:
            self._busy_until[run.device] = time.monotonic() + seconds

    def busy_for_s(self, pump: str) -> float:
        """Seconds (wall clock) until ``pump`` is done with its last run; 0 when idle."""
        with self._lock:
            end = self._busy_until.get(pump, -math.inf)
        return max(0.0, end - time.monotonic())
