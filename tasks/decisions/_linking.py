"""Online linking of detections into tracks with lineage, one time point at a time.

Each update links the newest detections to the last position of every live track with
laptrack's linear-assignment linker (Jaqaman et al. 2008) on a two-frame problem: frame-to-frame
links and divisions (one track splitting into two) are laptrack's own cost optimisation, not
ours. Why laptrack rather than trackpy's streaming linker: laptrack models divisions
(``splitting_cost_cutoff``), which lineage needs, and the same linker runs offline over whole
stored movies (``link_movie``), so the live and offline results come from one algorithm.

Tracks follow the Cell Tracking Challenge's conventions, so they can be written as CTC ``RES``
and scored: a track is a contiguous run of time points; a division ends the parent track and
starts two daughter tracks whose parent it is; a track missed for a few time points and found
again continues as a new track whose parent is the old one (CTC's gap convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LinkerSettings", "OnlineLinker", "Track", "link_movie"]


@dataclass(frozen=True)
class LinkerSettings:
    """Distances in the units of the positions given (µm live, pixels offline)."""

    max_step: float = 15.0  # farthest a cell moves between two time points
    max_split: float = 20.0  # farthest a daughter appears from its mother's last position
    max_gap: int = 2  # time points a track may go unseen before it ends
    divisions: bool = True


@dataclass
class Track:
    """One CTC track: ``track_id`` from 1, ``parent`` 0 for none, time points inclusive."""

    track_id: int
    parent: int
    first: int
    last: int
    points: dict[int, tuple[float, float]] = field(default_factory=dict)

    def position(self) -> tuple[float, float]:
        return self.points[self.last]


class OnlineLinker:
    """``ids = linker.update(t, points)``: the track id of each detection at time point ``t``.

    Time points must increase; a time point may be skipped (a frame that could not be taken).
    """

    def __init__(self, settings: LinkerSettings | None = None) -> None:
        from laptrack import LapTrack

        self.settings = settings or LinkerSettings()
        s = self.settings
        self._lap = LapTrack(
            track_cost_cutoff=s.max_step**2,
            splitting_cost_cutoff=s.max_split**2 if s.divisions else False,
            merging_cost_cutoff=False,
            gap_closing_cost_cutoff=False,
        )
        self.tracks: dict[int, Track] = {}
        self._next_id = 1
        self._last_t: int | None = None

    def update(self, t: int, points: np.ndarray) -> list[int]:
        """Link ``points`` ((n, 2) array) seen at time point ``t``; returns n track ids."""
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"time point {t} is not after the last one linked ({self._last_t})")
        self._last_t = t
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        live = [tr for tr in self.tracks.values() if t - tr.last <= self.settings.max_gap + 1]
        children = self._links(live, points)
        ids = [0] * len(points)
        for k, track in enumerate(live):
            kids = children.get(k, [])
            if len(kids) == 1 and track.last == t - 1:
                j = kids[0]
                track.last = t
                track.points[t] = (float(points[j, 0]), float(points[j, 1]))
                ids[j] = track.track_id
            else:  # a division, or found again after a gap: new tracks whose parent it is
                for j in kids:
                    ids[j] = self._start(t, points[j], parent=track.track_id)
        for j, track_id in enumerate(ids):
            if track_id == 0:
                ids[j] = self._start(t, points[j], parent=0)
        return ids

    def lineage(self) -> list[tuple[int, int, int, int]]:
        """CTC ``res_track.txt`` rows: (track id, first, last, parent id)."""
        return [(tr.track_id, tr.first, tr.last, tr.parent) for tr in self.tracks.values()]

    def daughters(self, track_id: int) -> list[Track]:
        return [tr for tr in self.tracks.values() if tr.parent == track_id]

    def _start(self, t: int, point: np.ndarray, *, parent: int) -> int:
        track_id = self._next_id
        self._next_id += 1
        self.tracks[track_id] = Track(
            track_id, parent, t, t, {t: (float(point[0]), float(point[1]))}
        )
        return track_id

    def _links(self, live: Sequence[Track], points: np.ndarray) -> dict[int, list[int]]:
        """live-track index -> indices of the new points linked to it (laptrack)."""
        if not live or not len(points):
            return {}
        previous = np.array([tr.position() for tr in live], dtype=float)
        tree = self._lap.predict([previous, points])
        children: dict[int, list[int]] = {}
        for (f0, i), (f1, j) in tree.edges():
            if (f0, f1) == (0, 1):
                children.setdefault(int(i), []).append(int(j))
            elif (f0, f1) == (1, 0):
                children.setdefault(int(j), []).append(int(i))
        return children


def link_movie(
    points_per_frame: Sequence[np.ndarray], settings: LinkerSettings | None = None
) -> tuple[list[list[int]], list[tuple[int, int, int, int]]]:
    """Link a whole movie offline with the same linker: the track id of every detection in
    every frame, and the CTC lineage rows."""
    linker = OnlineLinker(settings)
    ids = [linker.update(t, pts) for t, pts in enumerate(points_per_frame)]
    return ids, linker.lineage()
