"""Event detectors: is something happening in a region of interest of this frame?

A detector sees one frame's objects (an ObjectTable from the workers) with their stage
positions, which of them lie in the region of interest, and the previous frame's view of the
same position; it answers True while its event is visible. Detectors are pure and cheap (the
model ran on the workers already), so a user's own detector plugs in next to the built-in ones:
any object with a ``name`` and a ``detect(view) -> bool`` method.

- ``RoundingDetector``: a nucleus in the region is much brighter per pixel than the frame's
  typical nucleus (chromatin condenses and the nucleus shrinks as a cell rounds up before
  dividing).
- ``DivisionDetector``: where the previous frame had a rounded nucleus, this frame has two or
  more nuclei and no rounded one (the cell divided between the frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from scopeflow import ObjectTable

__all__ = ["DivisionDetector", "EventDetector", "EventView", "RoundingDetector"]


@dataclass(frozen=True)
class EventView:
    """One frame's objects at one position, in stage µm, and which lie in the region."""

    objects: ObjectTable
    x_um: np.ndarray
    y_um: np.ndarray
    in_roi: np.ndarray  # bool per object
    previous: EventView | None = None


@runtime_checkable
class EventDetector(Protocol):
    """``detect(view)`` is True while the detector's event is visible in the region."""

    name: str

    def detect(self, view: EventView) -> bool: ...


@dataclass(frozen=True)
class RoundingDetector:
    """A region nucleus at least ``intensity_ratio`` times as bright per pixel as the median
    nucleus of the frame (needs ``min_objects`` nuclei of at least ``min_area_px`` for the
    median to mean something)."""

    intensity_ratio: float = 1.6
    min_area_px: float = 20.0
    min_objects: int = 4
    name: str = "rounding"

    def rounded(self, view: EventView) -> np.ndarray:
        """Which objects look rounded (bool per object)."""
        objects = view.objects
        usable = objects.area_px >= self.min_area_px
        if int(usable.sum()) < self.min_objects:
            return np.zeros(len(objects), bool)
        reference = float(np.median(objects.mean_intensity[usable]))
        return usable & (objects.mean_intensity >= self.intensity_ratio * reference)

    def detect(self, view: EventView) -> bool:
        return bool((self.rounded(view) & view.in_roi).any())


@dataclass(frozen=True)
class DivisionDetector:
    """Two or more nuclei, none rounded, within ``max_distance_um`` of where the previous frame
    had a rounded region nucleus."""

    rounding: RoundingDetector = RoundingDetector()
    max_distance_um: float = 12.0
    name: str = "division"

    def detect(self, view: EventView) -> bool:
        before = view.previous
        if before is None:
            return False
        was = self.rounding.rounded(before) & before.in_roi
        if not was.any():
            return False
        now = self.rounding.rounded(view)
        for x, y in zip(before.x_um[was], before.y_um[was], strict=True):
            near = np.hypot(view.x_um - x, view.y_um - y) <= self.max_distance_um
            if int(near.sum()) >= 2 and not (near & now).any():
                return True
        return False
