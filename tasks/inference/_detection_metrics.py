"""Nuclei found, for counting: a predicted object is a hit when its centroid lies inside a true
nucleus not already hit (each true nucleus counts once), the criterion of cell-counting
benchmarks. Misses and spurious objects are scored as in ``instance_scores``."""

from __future__ import annotations

import numpy as np

from ._metrics import InstanceScores

__all__ = ["detection_scores", "detection_scores_at"]


def detection_scores(
    truth: np.ndarray, pred: np.ndarray, *, ignore: np.ndarray | None = None
) -> InstanceScores:
    """TP: predicted objects whose centroid falls in a distinct true nucleus; FP: the others
    (except those whose centroid lies on ``ignore``, e.g. far out-of-focus cells); FN: true
    nuclei no centroid fell in. ``mean_matched_iou`` is not measured (0)."""
    from scipy import ndimage as ndi

    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and pred {pred.shape} must be 2D of one shape")
    ids = np.unique(pred)
    ids = ids[ids > 0]
    n_true = int(np.unique(truth[truth > 0]).size)
    if not ids.size:
        return InstanceScores(0, 0, n_true, 0.0, 0.0)
    centres = np.asarray(ndi.center_of_mass(np.ones_like(pred), pred, ids), dtype=float)
    return detection_scores_at(truth, centres, ignore=ignore)


def detection_scores_at(
    truth: np.ndarray, centres: np.ndarray, *, ignore: np.ndarray | None = None
) -> InstanceScores:
    """``detection_scores`` of predicted objects given by their centroids ((n, 2) row/col
    pixels, e.g. nuclei a run logged as its stand-in)."""
    truth = np.asarray(truth)
    n_true = int(np.unique(truth[truth > 0]).size)
    centres = np.rint(np.asarray(centres, dtype=float).reshape(-1, 2)).astype(np.int64)
    if not len(centres):
        return InstanceScores(0, 0, n_true, 0.0, 0.0)
    rows = np.clip(centres[:, 0], 0, truth.shape[0] - 1)
    cols = np.clip(centres[:, 1], 0, truth.shape[1] - 1)
    hit = truth[rows, cols]
    tp = int(np.unique(hit[hit > 0]).size)
    misses = hit == 0
    if ignore is not None:
        misses &= ~np.asarray(ignore)[rows, cols]
    duplicates = int(np.sum(hit > 0)) - tp
    return InstanceScores(tp, int(np.sum(misses)) + duplicates, n_true - tp, 0.0, 0.0)
