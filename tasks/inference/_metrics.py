"""Instance segmentation accuracy: objects matched one-to-one by IoU (Hungarian)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["InstanceScores", "instance_scores", "iou_matrix", "pool_scores"]


@dataclass(frozen=True)
class InstanceScores:
    """Counts and rates at one IoU threshold (a match needs IoU >= threshold)."""

    tp: int
    fp: int
    fn: int
    mean_matched_iou: float
    threshold: float = 0.5

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = dict(asdict(self))
        out.update(precision=self.precision, recall=self.recall, f1=self.f1)
        return out


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every truth object (rows, labels 1..) and every predicted object (columns)."""
    truth, pred = _check(truth, "truth"), _check(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    t_ids, p_ids = np.unique(truth), np.unique(pred)
    nt, np_ = t_ids.size, p_ids.size
    inter = np.bincount(t.ravel() * np_ + p.ravel(), minlength=nt * np_).reshape(nt, np_)
    inter = inter[t_ids > 0][:, p_ids > 0].astype(np.float64)
    area_t = np.bincount(t.ravel(), minlength=nt)[t_ids > 0].astype(np.float64)
    area_p = np.bincount(p.ravel(), minlength=np_)[p_ids > 0].astype(np.float64)
    union = area_t[:, None] + area_p[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def instance_scores(
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    threshold: float = 0.5,
    ignore: np.ndarray | None = None,
) -> InstanceScores:
    """Match objects one-to-one maximising total IoU; TP = matches with IoU >= ``threshold``.

    ``ignore`` (bool, same shape): predicted objects lying mostly (> 50 %) on it and matching
    no truth object are not counted as false positives (e.g. far out-of-focus cells).
    """
    from scipy.optimize import linear_sum_assignment

    iou = iou_matrix(truth, pred)
    nt, np_ = iou.shape
    if nt and np_:
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= threshold
        rows, cols = rows[good], cols[good]
    else:
        rows = cols = np.zeros(0, np.int64)
    tp = int(rows.size)
    fp = np_ - tp
    if ignore is not None and fp:
        pred_ids = np.unique(pred)
        pred_ids = pred_ids[pred_ids > 0]
        unmatched = np.setdiff1d(np.arange(np_), cols)
        area = np.bincount(pred.ravel(), minlength=int(pred.max()) + 1)
        on_ignore = np.bincount(pred[ignore].ravel(), minlength=area.size)
        frac = on_ignore[pred_ids[unmatched]] / np.maximum(area[pred_ids[unmatched]], 1)
        fp -= int(np.sum(frac > 0.5))
    mean_iou = float(iou[rows, cols].mean()) if tp else 0.0
    return InstanceScores(tp, fp, nt - tp, mean_iou, threshold)


def pool_scores(scores: list[InstanceScores]) -> InstanceScores:
    """Micro-average: sum TP/FP/FN over images (matched IoU weighted by TP)."""
    tp = sum(s.tp for s in scores)
    miou = sum(s.mean_matched_iou * s.tp for s in scores) / tp if tp else 0.0
    thr = scores[0].threshold if scores else 0.5
    return InstanceScores(tp, sum(s.fp for s in scores), sum(s.fn for s in scores), miou, thr)


def _check(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{what} must be a 2D label image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must hold integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{what} has negative labels; use 0 for background")
    return labels.astype(np.int64, copy=False)
