"""Carry the last real expensive frame forward: how much a position changed since, in model space.

In a time-lapse the last real frame of the expensive channel at a position predicts the next one
well unless the sample changed there. The change is measured where the cheap channel's model
sees it: its nuclei now against its nuclei on the frame taken with the last real acquisition,
matched one to one (``linear_sum_assignment`` on distances, within ``radius``) after removing the
median shift. The model's systematic misses (a nucleus it never finds) are in both sets and
cancel out; what is left is motion, divisions, cells coming and going, and the model's flicker
(a nucleus in a cluster it finds in one frame and not the next). ``changed_nuclei`` counts the
nuclei without a twin, those inside the field discounted as mostly flicker, those in the band
along its edge in full (cells entering and leaving). The stand-in for the expensive frame is
the last real nuclei moved by the median shift (a single model twin's centroid jitters more
than a cell crawls between time points), plus the model's new nuclei in the edge band with no
real nucleus near them (cells entering the field).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

__all__ = [
    "ModelChange",
    "carry_forward",
    "changed_nuclei",
    "confirmed_candidates",
    "match_points",
    "model_change",
]

_COARSE = 3.0  # the first matching, which estimates the shift, reaches this many radii


def match_points(a: np.ndarray, b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (indices into ``a`` and ``b``, points as rows) at most ``radius``
    apart, the assignment of least total distance among pairs within it."""
    if not len(a) or not len(b):
        return np.zeros(0, int), np.zeros(0, int)
    dist = cdist(a, b)
    cost = np.where(dist <= radius, dist, radius * 1e3)  # out of reach: never preferred
    rows, cols = linear_sum_assignment(cost)
    keep = dist[rows, cols] <= radius
    return rows[keep], cols[keep]


@dataclass(frozen=True)
class ModelChange:
    """The model's nuclei now against those at the last acquisition."""

    f1: float  # one-to-one agreement: 1 when every nucleus has its twin
    shift: tuple[float, float]  # median displacement (rows, cols) of the matched twins
    then: np.ndarray  # indices into the nuclei at the acquisition...
    now: np.ndarray  # ...and of their twins now


def model_change(then: np.ndarray, now: np.ndarray, radius: float) -> ModelChange:
    """Match ``now`` to ``then`` (both (n, 2) row/col points) after removing the median shift of
    a first, wider matching; F1 of the one-to-one agreement."""
    then, now = _points(then), _points(now)
    if not len(then) and not len(now):
        return ModelChange(1.0, (0.0, 0.0), np.zeros(0, int), np.zeros(0, int))
    i, j = match_points(then, now, _COARSE * radius)
    shift = np.median(now[j] - then[i], axis=0) if len(i) else np.zeros(2)
    i, j = match_points(then + shift, now, radius)
    if len(i):
        shift = np.median(now[j] - then[i], axis=0)
    f1 = 2.0 * len(i) / (len(then) + len(now))
    return ModelChange(float(f1), (float(shift[0]), float(shift[1])), i, j)


def changed_nuclei(
    then: np.ndarray,
    now: np.ndarray,
    change: ModelChange,
    shape: tuple[int, int],
    edge_px: float,
    flicker_weight: float,
) -> float:
    """The nuclei without a twin (gone since ``then`` or new ``now``), each counted 1 in the band
    ``edge_px`` wide along the field's edge and ``flicker_weight`` inside it."""
    then, now = _points(then), _points(now)
    gone = np.setdiff1d(np.arange(len(then)), change.then)
    new = np.setdiff1d(np.arange(len(now)), change.now)
    unmatched = np.vstack([then[gone], now[new]])
    at_edge = _edge_distance(unmatched, shape) < edge_px
    return float(np.sum(at_edge) + flicker_weight * np.sum(~at_edge))


def carry_forward(
    real: np.ndarray,
    model_now: np.ndarray,
    change: ModelChange,
    radius: float,
    shape: tuple[int, int],
    edge_px: float,
) -> np.ndarray:
    """The last real nuclei moved by the median shift (those moved out of the frame dropped),
    plus the model's nuclei new since then in the edge band with no real nucleus within
    ``radius`` (cells entering the field)."""
    real, model_now = _points(real), _points(model_now)
    moved = real + np.asarray(change.shift)
    h, w = shape
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < h) & (moved[:, 1] >= 0) & (moved[:, 1] < w)
    moved = moved[inside]
    new = model_now[np.setdiff1d(np.arange(len(model_now)), change.now)]
    entering = new[_edge_distance(new, shape) < edge_px]
    if len(entering) and len(moved):
        entering = entering[cdist(entering, moved).min(axis=1) > radius]
    return np.vstack([moved, entering])


def confirmed_candidates(
    real: np.ndarray, candidates: np.ndarray, model: np.ndarray, radius: float
) -> np.ndarray:
    """The candidates (a more sensitive segmentation's extra nuclei in the real frame) that the
    model's nuclei on the cheap frame taken with it confirm: a model nucleus within ``radius``
    and no real nucleus within it. Added to the reference, they are not carried forward as
    misses while the reference stands in."""
    real, candidates, model = _points(real), _points(candidates), _points(model)
    if not len(candidates) or not len(model):
        return np.zeros((0, 2))
    keep = cdist(candidates, model).min(axis=1) <= radius
    if len(real):
        keep &= cdist(candidates, real).min(axis=1) > radius
    return candidates[keep]


def _edge_distance(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return np.minimum(np.minimum(p[:, 0], h - 1 - p[:, 0]), np.minimum(p[:, 1], w - 1 - p[:, 1]))


def _points(p: np.ndarray) -> np.ndarray:
    return np.asarray(p, dtype=float).reshape(-1, 2)
