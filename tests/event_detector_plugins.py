"""User detectors for tests/test_event_triggered_flow.py, loaded by name as a user's own
package would be (``detectors: ["tests.event_detector_plugins:failing_east"]``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.decisions import EventView

EAST_OF_UM = 5_500.0


@dataclass(frozen=True)
class FailingEast:
    """Raises from its third frame on at positions east of ``EAST_OF_UM`` (a user's model
    that crashes on some data); elsewhere it never fires."""

    name: str = "failing-east"

    def detect(self, view: EventView) -> bool:
        depth, before = 0, view.previous
        while before is not None:
            depth, before = depth + 1, before.previous
        if depth >= 2 and len(view.x_um) and float(np.median(view.x_um)) > EAST_OF_UM:
            raise RuntimeError("mitosis model crashed on this frame")
        return False


def failing_east() -> FailingEast:
    return FailingEast()
