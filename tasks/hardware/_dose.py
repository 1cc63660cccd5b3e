"""The light dose delivered by an edge, kept on disk so that a restart does not reset it.

``dose.json`` in the edge's data dir holds the dose charged so far, in integer nanojoules (sums
stay exact). A charge is written (atomically: a temporary file, then a rename) before the
exposure it pays for, so a crash never loses a dose that was delivered.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from scopeflow import JournalError

__all__ = ["DoseLedger", "Exposure"]


@dataclass(frozen=True, slots=True)
class Exposure:
    """What one exposure was charged, from the settings in force when it was taken (journaled
    with its frames so the dose can be audited)."""

    channel: str | None
    exposure_ms: float
    intensity: float | None  # percent; None: the source has no intensity property (counts 100)
    power_mw: float  # at the sample at 100 %
    dose_mj: float

    def meta(self) -> dict[str, float | None]:
        return {"intensity": self.intensity, "power_mw": self.power_mw, "dose_mj": self.dose_mj}


def nanojoules(mj: float) -> int:
    return round(mj * 1e6)


class DoseLedger:
    """The used light dose of one edge data dir (thread-safe)."""

    FILE = "dose.json"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / self.FILE
        self._lock = threading.Lock()
        self._used_nj = self._load()

    def _load(self) -> int:
        if not self.path.exists():
            return 0
        try:
            used = json.loads(self.path.read_text(encoding="utf-8"))["used_nj"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JournalError(
                f"the light dose ledger {self.path} cannot be read ({exc}); the dose used so far "
                "is unknown, so the edge refuses to start: restore the file, or, if the sample "
                "was changed, delete it to start a new budget"
            ) from exc
        if not isinstance(used, int) or used < 0:
            raise JournalError(
                f"the light dose ledger {self.path} holds {used!r}, not a dose in nanojoules: "
                "restore the file or delete it to start a new budget"
            )
        return used

    @property
    def used_mj(self) -> float:
        with self._lock:
            return self._used_nj / 1e6

    def charge(self, dose_mj: float, budget_mj: float) -> bool:
        """Add ``dose_mj`` if it fits in ``budget_mj`` (then written to disk); False if not."""
        extra = nanojoules(dose_mj)
        with self._lock:
            if self._used_nj + extra > nanojoules(budget_mj):
                return False
            if extra:
                self._write(self._used_nj + extra)
            self._used_nj += extra
            return True

    def _write(self, used_nj: int) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"used_nj": used_nj, "unit": "nJ"}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise JournalError(f"cannot write the light dose ledger {self.path}: {exc}") from exc
