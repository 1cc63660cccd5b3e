"""Simulated time: real time scaled, plus manual advances for tests."""

from __future__ import annotations

import threading
import time

__all__ = ["SimClock"]


class SimClock:
    """Simulated seconds since start: ``time_scale`` x real time, plus manual advances.

    ``time_scale=0`` freezes time, so only :meth:`advance` and :meth:`set` move it.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self._scale = float(time_scale)
        self._t0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def time_scale(self) -> float:
        return self._scale

    @property
    def frozen(self) -> bool:
        return self._scale == 0.0

    def now(self) -> float:
        """Simulated seconds since the clock started."""
        if self._scale == 0.0:
            return self._offset
        return self._offset + (time.monotonic() - self._t0) * self._scale

    def advance(self, dt_s: float) -> float:
        """Jump forward by ``dt_s`` simulated seconds; returns the new time."""
        if dt_s < 0:
            raise ValueError(f"time only runs forward; got dt_s={dt_s}")
        with self._lock:
            self._offset += dt_s
        return self.now()

    def set(self, t_s: float) -> None:
        """Make :meth:`now` return ``t_s`` at this instant (it may not go backwards)."""
        with self._lock:
            delta = t_s - self.now()
            if delta < 0:
                raise ValueError(f"time only runs forward; now={self.now():.3f}, asked {t_s}")
            self._offset += delta
