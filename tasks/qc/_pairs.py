"""Metrics between images: drift of a tile against its neighbours' overlap (a mosaic) or
against the previous frame (a series at one position), with scikit-image's phase correlation.

A mosaic tile is registered on the overlap it shares with each earlier tile next to it (from
the stage positions); the measured shift is the tile's content displacement relative to that
neighbour's, so a tile's own displacement is its neighbour's plus the shift (a drifted tile
does not make the good tile after it look drifted). Of several neighbours, the best
correlated overlap wins. ``drift_px`` is the size of that displacement in full-resolution
pixels; ``overlap_ncc`` is the correlation of the registered overlap (low: the overlap does
not show the same sample: wrong position, corrupt content); ``overlap_offset`` the mean grey
difference from that neighbour there (reported, not judged: a step after a bad neighbour
would look like one). A tile without a stage position is not compared.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ._metrics import ImageMetrics

__all__ = ["PairMetrics", "TilePlacement", "TileRegistry"]


@dataclass(frozen=True)
class TilePlacement:
    """Where a tile was taken: stage position (µm) and pixel size (µm); unknown -> None."""

    stage_x_um: float | None
    stage_y_um: float | None
    pixel_size_um: float | None

    @property
    def known(self) -> bool:
        return None not in (self.stage_x_um, self.stage_y_um, self.pixel_size_um)


@dataclass(frozen=True)
class PairMetrics:
    values: dict[str, float]
    neighbour: str | None
    note: str = ""


@dataclass
class _Seen:
    metrics: ImageMetrics
    placement: TilePlacement
    displacement: np.ndarray  # (dy, dx) full-resolution px, relative to the anchor tile
    offset: float


class TileRegistry:
    """Keeps the last ``keep`` tiles' edge strips and displacements; ``add`` measures a new
    tile against them."""

    def __init__(self, *, keep: int = 64, min_overlap_px: int = 16) -> None:
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._keep = keep
        self._min_overlap = min_overlap_px

    def add(self, key: str, metrics: ImageMetrics, placement: TilePlacement) -> PairMetrics:
        if not metrics.readable:
            return PairMetrics({}, None, "unreadable")
        best: tuple[float, str, np.ndarray, float] | None = None
        same_place = None
        if placement.known:
            for other_key, other in reversed(self._seen.items()):
                if not other.placement.known:
                    continue
                if other.metrics.shape != metrics.shape:
                    continue
                found = self._against(metrics, placement, other)
                if found is None:
                    continue
                if found == "same":
                    same_place = other_key
                    break
                ncc, shift, offset = found
                if best is None or ncc > best[0]:
                    best = (ncc, other_key, other.displacement + shift, offset)
        else:
            self._remember(key, metrics, placement, np.zeros(2), 0.0)
            return PairMetrics({}, None, "no stage position in the metadata: drift not measured")
        if same_place is not None:
            result = self._series(key, metrics, placement, same_place)
        elif best is None:
            self._remember(key, metrics, placement, np.zeros(2), 0.0)
            return PairMetrics({}, None, "no overlapping earlier tile")
        else:
            ncc, other_key, displacement, offset = best
            self._remember(key, metrics, placement, displacement, offset)
            result = PairMetrics(
                {
                    "drift_px": float(np.hypot(*displacement)),
                    "overlap_ncc": float(ncc),
                    "overlap_offset": float(offset),
                },
                other_key,
            )
        return result

    def _series(
        self, key: str, metrics: ImageMetrics, placement: TilePlacement, previous: str
    ) -> PairMetrics:
        from skimage.registration import phase_cross_correlation

        other = self._seen[previous]
        a, b = other.metrics.center, metrics.center
        self._remember(key, metrics, placement, np.zeros(2), 0.0)
        if a is None or b is None or a.shape != b.shape:
            return PairMetrics({}, None, "previous frame has another size")
        shift, _, _ = phase_cross_correlation(
            a.astype(np.float32), b.astype(np.float32), upsample_factor=4
        )
        return PairMetrics({"drift_px": float(np.hypot(*shift))}, previous)

    def _remember(
        self,
        key: str,
        metrics: ImageMetrics,
        placement: TilePlacement,
        displacement: np.ndarray,
        offset: float,
    ) -> None:
        self._seen[key] = _Seen(metrics, placement, displacement, offset)
        while len(self._seen) > self._keep:
            self._seen.popitem(last=False)

    def _against(
        self, metrics: ImageMetrics, placement: TilePlacement, other: _Seen
    ) -> tuple[float, np.ndarray, float] | str | None:
        """(ncc, this tile's displacement relative to ``other``, grey offset), "same" for a
        frame at the same place, or None when the two do not share enough overlap."""
        px = placement.pixel_size_um or 1.0
        h, w = metrics.shape
        dy = (placement.stage_y_um - other.placement.stage_y_um) / px  # type: ignore[operator]
        dx = (placement.stage_x_um - other.placement.stage_x_um) / px  # type: ignore[operator]
        if abs(dy) < 0.01 * h and abs(dx) < 0.01 * w:
            return "same"
        border = metrics.border_px
        if abs(dx) >= abs(dy):
            overlap = w - abs(dx)
            if abs(dy) > h / 2 or not self._min_overlap <= overlap <= border:
                return None
            horizontal = True
        else:
            overlap = h - abs(dy)
            if abs(dx) > w / 2 or not self._min_overlap <= overlap <= border:
                return None
            horizontal = False
        new_is_second = (dx > 0) if horizontal else (dy > 0)
        first, second = (other.metrics, metrics) if new_is_second else (metrics, other.metrics)
        along = (dy if horizontal else dx) * (1 if new_is_second else -1)
        measured = _register(first, second, horizontal, overlap, along)
        if measured is None:
            return None
        ncc, shift, offset = measured
        if not new_is_second:
            shift, offset = -shift, -offset
        return ncc, shift, offset


def _register(
    first: ImageMetrics, second: ImageMetrics, horizontal: bool, overlap: float, along: float
) -> tuple[float, np.ndarray, float] | None:
    """Register the overlap of ``second`` (right of / below ``first``, ``along`` px further
    down / right along the shared edge): the displacement (dy, dx) of ``second``'s content
    relative to ``first``'s in px, the overlap's NCC after alignment, and second's mean grey
    minus first's there."""
    from skimage.registration import phase_cross_correlation

    if horizontal:
        a_strip, b_strip, start = first.strips["right"], second.strips["left"], first.strip_start[0]
    else:  # top/bottom strips are stored transposed: the shared edge runs down the rows
        a_strip, b_strip, start = first.strips["bottom"], second.strips["top"], first.strip_start[1]
    length = a_strip.shape[0]
    ov_i, al_i = round(overlap), round(along)
    lo, hi = max(start, start + al_i), min(start + length, start + length + al_i)
    if hi - lo < 16 or ov_i < 8:
        return None
    a = a_strip[lo - start : hi - start, a_strip.shape[1] - ov_i :].astype(np.float32)
    b = b_strip[lo - start - al_i : hi - start - al_i, :ov_i].astype(np.float32)
    # the shift that registers b onto a, plus the sub-pixel parts of the nominal offsets
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=4, normalization=None)
    displacement = np.array([shift[0] + al_i - along, shift[1] + ov_i - overlap])
    a_al, b_al = _aligned(a, b, round(shift[0]), round(shift[1]))
    if a_al.size < 64:
        return None
    ncc = float(np.corrcoef(a_al.ravel(), b_al.ravel())[0, 1]) if a_al.std() > 0 else 0.0
    offset = float(b_al.mean() - a_al.mean())
    if not horizontal:
        displacement = displacement[::-1]
    return ncc, displacement, offset


def _aligned(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of ``a`` and ``b`` that show the same place when b[r, c] shows
    a[r + dy, c + dx]."""
    h, w = a.shape

    def span(d: int, n: int) -> tuple[slice, slice]:
        return (slice(0, n + d), slice(-d, n)) if d < 0 else (slice(d, n), slice(0, n - d))

    ay, by = span(dy, h)
    ax, bx = span(dx, w)
    return a[ay, ax], b[by, bx]
