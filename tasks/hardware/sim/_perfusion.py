"""Fluidics on the simulated sample: a syringe pump (as NanoJ-Fluidics drives them) exchanging
the chamber's medium with a reservoir's, and what the drugs do to the cells.

The chamber keeps its volume (an outflow takes what the pump brings in), so dispensing ``v`` µL
of a reservoir into a chamber of ``V`` µL moves each drug's concentration a fraction
``1 - exp(-v / V)`` of the way to the reservoir's (a washout with medium lowers it again).
Concentrations are in multiples of the drug's effective concentration: a drug at 1 or more acts
from the end of the infusion on. A drug slows the cells' biology: the sample lives on a
*biological* clock that runs at the slowest active drug's ``rate`` (0: stopped, e.g. a
fixative, which stays in force after a washout). Motion, growth, rounding and division all
follow that clock, so a cytostatic drug slows division and motion at once, and a fixative
freezes the sample where it is; bleaching (the light dose) does not depend on it.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pymmcore_plus.experimental.unicore import GenericDevice, pymm_property

from scopeflow import HardwareError

if TYPE_CHECKING:
    from ._clock import SimClock

__all__ = ["BiologyClock", "Chamber", "PerfusionConfig", "Reservoir", "SimPump"]


class Reservoir(BaseModel):
    """One syringe's contents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contents: str = Field(description="What it holds, for people (e.g. 'nocodazole 1 µM')")
    fold: float = Field(
        0.0, ge=0, description="Concentration in multiples of the drug's effective one"
    )
    rate: float = Field(
        1.0, ge=0, le=1, description="Biological clock rate while the drug acts (0: stops it)"
    )
    irreversible: bool = Field(False, description="Stays in force after a washout (fixative)")


def _default_reservoirs() -> dict[str, Reservoir]:
    drug = "cytostatic drug (slows division and motion)"
    return {
        "medium": Reservoir(contents="culture medium"),
        "drug": Reservoir(contents=drug, fold=10.0, rate=0.1),
        "fixative": Reservoir(contents="4 % PFA", fold=5.0, rate=0.0, irreversible=True),
    }


class PerfusionConfig(BaseModel):
    """The pump's chamber and reservoirs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chamber_volume_ul: float = Field(200.0, gt=0, description="Imaging chamber volume, µL")
    reservoirs: dict[str, Reservoir] = Field(default_factory=_default_reservoirs)
    max_flow_ul_per_min: float = Field(
        2_000.0, gt=0, description="The syringe pump's own top speed"
    )


class BiologyClock:
    """A monotone, piecewise-linear map from the sample's real (simulated) time to its
    biological time: identity until a drug acts, then slower (rate < 1) or stopped (rate 0)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[float] = [-math.inf]  # real time each segment starts
        self._taus: list[float] = [-math.inf]  # biological time there
        self._rates: list[float] = [1.0]

    def tau(self, t_s: float) -> float:
        """Biological time at real time ``t_s``."""
        with self._lock:
            k = bisect.bisect_right(self._starts, t_s) - 1
            if k == 0:
                return float(t_s)
            return self._taus[k] + self._rates[k] * (t_s - self._starts[k])

    def real(self, tau_s: float) -> float:
        """Real time at which biological time reaches ``tau_s`` (inf: never, it stopped)."""
        with self._lock:
            for k in range(len(self._starts) - 1, 0, -1):
                if tau_s >= self._taus[k]:
                    rate = self._rates[k]
                    if tau_s == self._taus[k]:
                        return self._starts[k]
                    return self._starts[k] + (tau_s - self._taus[k]) / rate if rate else math.inf
            return float(tau_s)

    def set_rate(self, t_s: float, rate: float) -> None:
        """From real time ``t_s`` on, biology runs at ``rate``; later segments are replaced."""
        tau = self.tau(t_s)
        with self._lock:
            k = bisect.bisect_left(self._starts, t_s)
            del self._starts[k:], self._taus[k:], self._rates[k:]
            self._starts.append(t_s)
            self._taus.append(tau)
            self._rates.append(rate)

    def rate_at(self, t_s: float) -> float:
        with self._lock:
            return self._rates[bisect.bisect_right(self._starts, t_s) - 1]


class Chamber:
    """Drug concentrations in the chamber and the record of every infusion (the truth)."""

    def __init__(self, config: PerfusionConfig, biology: BiologyClock) -> None:
        self.config = config
        self.biology = biology
        self._lock = threading.Lock()
        self._level = dict.fromkeys(config.reservoirs, 0.0)
        self._fixed: set[str] = set()
        self.infusions: list[dict[str, Any]] = []

    def infuse(self, t_s: float, reservoir: str, volume_ul: float, flow_ul_per_min: float) -> dict:
        """Dispense ``volume_ul`` of ``reservoir`` from ``t_s``; the drugs act from its end."""
        cfg = self.config
        if reservoir not in cfg.reservoirs:
            raise HardwareError(
                f"the pump has no reservoir {reservoir!r}; it holds {sorted(cfg.reservoirs)}"
            )
        t_end = t_s + volume_ul / flow_ul_per_min * 60.0
        exchanged = 1.0 - math.exp(-volume_ul / cfg.chamber_volume_ul)
        with self._lock:
            for name in self._level:
                target = cfg.reservoirs[name].fold if name == reservoir else 0.0
                self._level[name] += (target - self._level[name]) * exchanged
            active = {n for n, level in self._level.items() if level >= 1.0 and n != "medium"}
            self._fixed |= {n for n in active if cfg.reservoirs[n].irreversible}
            acting = active | self._fixed
            rate = min((cfg.reservoirs[n].rate for n in acting), default=1.0)
            record = {
                "t_start_s": t_s,
                "t_end_s": t_end,
                "reservoir": reservoir,
                "contents": cfg.reservoirs[reservoir].contents,
                "volume_ul": volume_ul,
                "flow_ul_per_min": flow_ul_per_min,
                "concentrations": {n: round(v, 6) for n, v in self._level.items()},
                "acting": sorted(acting),
                "biology_rate": rate,
            }
            self.infusions.append(record)
        self.biology.set_rate(t_end, rate)
        return record

    def truth(self, t_s: float) -> dict[str, Any]:
        with self._lock:
            infusions = [dict(r) for r in self.infusions]
        return {
            "biological_time_s": self.biology.tau(t_s),
            "biology_rate": self.biology.rate_at(t_s),
            "infusions": infusions,
        }


class SimPump(GenericDevice):
    """A syringe pump: set ``Reservoir``, ``Volume_uL`` and ``FlowRate_uL_per_min``, then set
    ``Command`` to ``Dispense``. It dispenses in the background (``Command`` reads
    ``Dispense`` until the volume is in, in simulated time) and refuses a new run until then;
    it never reports busy, so imaging goes on while it pumps."""

    def __init__(self, chamber: Chamber, clock: SimClock) -> None:
        super().__init__()
        self._chamber = chamber
        self._clock = clock
        self._reservoir = next(iter(chamber.config.reservoirs))
        self._volume = 0.0
        self._flow = 100.0
        self._busy_until = -math.inf
        self.register_property(
            "Reservoir",
            getter=SimPump.get_reservoir,
            setter=SimPump.set_reservoir,
            allowed_values=list(chamber.config.reservoirs),
            property_type=str,
        )

    def get_reservoir(self) -> str:
        return self._reservoir

    def set_reservoir(self, value: str) -> None:
        self._reservoir = str(value)

    def dispensing(self) -> bool:
        return self._clock.now() < self._busy_until

    @pymm_property(limits=(0.0, 10_000.0), name="Volume_uL")
    def volume_ul(self) -> float:
        return self._volume

    @volume_ul.setter
    def volume_ul(self, value: float) -> None:
        self._volume = float(value)

    @pymm_property(limits=(0.0, 10_000.0), name="FlowRate_uL_per_min")
    def flow_ul_per_min(self) -> float:
        return self._flow

    @flow_ul_per_min.setter
    def flow_ul_per_min(self, value: float) -> None:
        self._flow = float(value)

    @pymm_property(allowed_values=["Idle", "Dispense"], name="Command")
    def command(self) -> str:
        return "Dispense" if self.dispensing() else "Idle"

    @command.setter
    def command(self, value: str) -> None:
        if value != "Dispense":
            return
        if self.dispensing():
            raise HardwareError(
                "the pump is still dispensing its last volume; wait until it is idle"
            )
        if not (self._volume > 0 and 0 < self._flow <= self._chamber.config.max_flow_ul_per_min):
            raise HardwareError(
                f"the pump cannot dispense {self._volume:g} µL at {self._flow:g} µL/min "
                f"(its top speed is {self._chamber.config.max_flow_ul_per_min:g} µL/min)"
            )
        now = self._clock.now()
        record = self._chamber.infuse(now, self._reservoir, self._volume, self._flow)
        self._busy_until = record["t_end_s"]
