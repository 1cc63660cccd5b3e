"""Event detectors: is something happening in a region of interest of this frame?

A detector sees one frame's objects (an ObjectTable from the workers) with their stage
positions, which of them lie in the region of interest, and the previous frame's view of the
same position; it answers True while its event is visible. Detectors are pure and cheap (the
model ran on the workers already), so a user's own detector plugs in next to the built-in ones:
any object with a ``name`` and a ``detect(view) -> bool`` method.

- ``RoundingDetector``: a nucleus in the region turned brighter per pixel and smaller than it
  was in the previous frame (chromatin condenses and the nucleus shrinks as a cell rounds up
  before dividing), and stays so.
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
    """A region nucleus that turned brighter and smaller since the previous frame (brightness
    relative to the frame's median nucleus up by ``jump`` or more, area down to ``shrink`` or
    less) and is at least ``intensity_ratio`` times the median, or one that was rounded in the
    previous frame, is still that bright and has not grown by more than 1 / ``shrink``. Needs
    ``min_objects`` nuclei of at least ``min_area_px`` for the median to mean something; the
    previous frames come from the view's ``previous`` chain (a nucleus already rounded in the
    first frame is not seen)."""

    intensity_ratio: float = 1.2
    jump: float = 1.2
    shrink: float = 0.85
    match_um: float = 6.0
    min_area_px: float = 20.0
    min_objects: int = 4
    name: str = "rounding"

    def rounded(self, view: EventView) -> np.ndarray:
        """Which objects look rounded (bool per object)."""
        out = np.zeros(len(view.objects), bool)
        relative = self._relative(view)
        before = view.previous
        if relative is None or before is None:
            return out
        previous = self._relative(before)
        if previous is None:
            return out
        was = self.rounded(before)
        area, area_before = view.objects.area_px, before.objects.area_px
        for k in np.flatnonzero(relative >= self.intensity_ratio):
            distance = np.hypot(before.x_um - view.x_um[k], before.y_um - view.y_um[k])
            j = int(np.argmin(distance)) if distance.size else -1
            if j < 0 or distance[j] > self.match_um:
                continue
            if was[j]:  # still rounded unless it grew back (daughters are larger)
                out[k] = bool(area[k] * self.shrink <= area_before[j])
            else:
                turned = relative[k] >= self.jump * previous[j]
                out[k] = bool(turned and area[k] <= self.shrink * area_before[j])
        return out

    def detect(self, view: EventView) -> bool:
        return bool((self.rounded(view) & view.in_roi).any())

    def _relative(self, view: EventView) -> np.ndarray | None:
        """Brightness per pixel / the frame's median nucleus (0 for specks); None: too few."""
        objects = view.objects
        usable = objects.area_px >= self.min_area_px
        if int(usable.sum()) < self.min_objects:
            return None
        reference = float(np.median(objects.mean_intensity[usable]))
        return np.where(usable, objects.mean_intensity / max(reference, 1e-9), 0.0)


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
