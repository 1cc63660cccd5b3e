"""Nuclei found, for counting: a predicted object is a hit when its centroid lies inside a true
nucleus not already hit (each true nucleus counts once), the criterion of cell-counting
benchmarks. Misses and spurious objects are scored as in ``instance_scores``."""

from __future__ import annotations

import numpy as np

from ._metrics import InstanceScores

__all__ = ["detection_scores"]


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
    centres = np.rint(ndi.center_of_mass(np.ones_like(pred), pred, ids)).astype(np.int64)
    rows = np.clip(centres[:, 0], 0, truth.shape[0] - 1)
    cols = np.clip(centres[:, 1], 0, truth.shape[1] - 1)
    hit = truth[rows, cols]
    tp = int(np.unique(hit[hit > 0]).size)
    misses = hit == 0
    if ignore is not None:
        misses &= ~np.asarray(ignore)[rows, cols]
    duplicates = int(np.sum(hit > 0)) - tp
    return InstanceScores(tp, int(np.sum(misses)) + duplicates, n_true - tp, 0.0, 0.0)
