"""pymmcore-plus's MDAEngine, serialised with direct commands through one hardware lock."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import useq
from pymmcore_plus import CMMCorePlus
from pymmcore_plus.mda import MDAEngine

if TYPE_CHECKING:
    from pymmcore_plus.mda._protocol import PImagePayload  # private: no public name upstream

__all__ = ["LockedMDAEngine"]


class LockedMDAEngine(MDAEngine):
    """Holds ``lock`` while an event sets up and executes, so a direct command never interleaves."""

    def __init__(self, mmc: CMMCorePlus, lock: threading.RLock) -> None:
        super().__init__(mmc)
        self._hardware_lock = lock

    def setup_event(self, event: useq.MDAEvent) -> None:
        with self._hardware_lock:
            super().setup_event(event)

    def exec_event(self, event: useq.MDAEvent) -> Iterable[PImagePayload | None]:
        return self._locked(super().exec_event(event))

    def _locked(self, payloads: Iterable[PImagePayload | None]) -> Iterator[Any]:
        with self._hardware_lock:
            if isinstance(payloads, Generator):
                yield from payloads  # keeps the runner's pause/cancel sends reaching the engine
            else:
                for payload in payloads:  # noqa: UP028 - a plain loop ignores the runner's sends
                    yield payload
