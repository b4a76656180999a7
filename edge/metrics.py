"""Crowd verdicts scored against labels, and decision thresholds chosen on labelled frames.

numpy only. Labels are binary: 1 = the positive class (crowd), 0 = anything else. The confusion
matrix has rows = truth and columns = verdict, both ordered (positive, negative). ROC-AUC is the
Mann-Whitney statistic with tied scores counted as half (what scikit-learn's ``roc_auc_score``
computes; ``tests/test_edge_metrics.py`` checks both against it).

Thresholds (:func:`best_threshold`, :func:`calibrate_heatmap`) maximise balanced accuracy; ties
go to the higher crowd recall (a missed crowd costs more than a detour), then to the lower
threshold. A threshold sits in the middle of the gap between two observed values, the largest
margin the data allows on both sides.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from edge.contract import DecisionRule

#: per-area probability thresholds a heatmap calibration tries
HEAT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def _labels(y_true) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be a 1-D array of 0/1, got shape {y.shape}")
    return y.astype(bool)


def confusion_matrix(y_true, y_pred) -> np.ndarray:
    """[[TP, FN], [FP, TN]]: rows truth (positive, negative), columns verdict (positive, negative)."""
    y, p = _labels(y_true), _labels(y_pred)
    return np.array([[int((y & p).sum()), int((y & ~p).sum())],
                     [int((~y & p).sum()), int((~y & ~p).sum())]], dtype=np.int64)


def recalls(y_true, y_pred) -> tuple:
    """(recall of the positives, recall of the negatives); nan for a class with no frames."""
    cm = confusion_matrix(y_true, y_pred)
    pos, neg = cm[0].sum(), cm[1].sum()
    return (cm[0, 0] / pos if pos else float("nan"), cm[1, 1] / neg if neg else float("nan"))


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true``."""
    present = [r for r in recalls(y_true, y_pred) if not np.isnan(r)]
    return float(np.mean(present)) if present else float("nan")


def roc_auc(y_true, score) -> float:
    """Probability that a random positive scores above a random negative (ties count half);
    nan unless both classes are present."""
    y = _labels(y_true)
    s = np.asarray(score, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores for {len(y)} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    midrank = upper - (counts - 1) / 2.0                 # 1-based average rank of each value
    rank_sum = float(midrank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def summarize(y_true, y_pred, score) -> Dict[str, object]:
    """Counts, per-class recall, balanced accuracy, ROC-AUC and the confusion matrix."""
    y = _labels(y_true)
    rp, rn = recalls(y, y_pred)
    return {"n": int(len(y)), "n_positive": int(y.sum()), "n_negative": int((~y).sum()),
            "recall_positive": _num(rp), "recall_negative": _num(rn),
            "accuracy": _num(float((y == _labels(y_pred)).mean()) if len(y) else float("nan")),
            "balanced_accuracy": _num(balanced_accuracy(y, y_pred)),
            "roc_auc": _num(roc_auc(y, score)),
            "confusion": confusion_matrix(y, y_pred).tolist()}


def _num(v: float) -> Optional[float]:
    """JSON has no NaN: a metric that does not exist for this data is null."""
    return None if v is None or np.isnan(v) else round(float(v), 6)


# ------------------------------------------------------------------------------ thresholds
@dataclass(frozen=True)
class Choice:
    threshold: float            # verdict: evidence >= threshold
    balanced_accuracy: float
    recall: float               # of the positives


def _candidates(values: np.ndarray) -> np.ndarray:
    """Midpoints of the gaps between the observed values, plus one below and one above them;
    only those strictly inside (0, 1), where a decision threshold lives."""
    u = np.unique(values)
    mids = [(u[:-1] + u[1:]) / 2.0, [u[0] / 2.0, (u[-1] + 1.0) / 2.0]]
    c = np.unique(np.concatenate(mids))
    return c[(c > 0.0) & (c < 1.0)]


def best_threshold(y_true, evidence) -> Choice:
    """The threshold on ``evidence`` (values in [0, 1]) that maximises balanced accuracy; ties
    to the higher positive recall, then the lower threshold. Needs both classes."""
    y = _labels(y_true)
    e = np.asarray(evidence, dtype=np.float64)
    if e.shape != y.shape or not np.isfinite(e).all():
        raise ValueError(f"need one finite evidence value per label, got {e.shape} for {y.shape}")
    if y.all() or not y.any():
        raise ValueError("choosing a threshold needs frames of both classes "
                         f"({int(y.sum())} positive, {int((~y).sum())} negative)")
    cand = _candidates(np.clip(e, 0.0, 1.0))
    pred = e[:, None] >= cand[None, :]                                 # [N, K]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tp = (pred & y[:, None]).sum(0)
    tn = (~pred & ~y[:, None]).sum(0)
    # balanced accuracy * 2 * n_pos * n_neg, in integers: equal accuracies compare equal
    bacc_int = tp * n_neg + tn * n_pos
    best = np.lexsort((cand, -tp, -bacc_int))[0]   # last key sorts first: bacc, recall, low threshold
    return Choice(float(cand[best]), float(bacc_int[best]) / (2.0 * n_pos * n_neg),
                  float(tp[best]) / n_pos)


def calibrate_classify(y_true, p_crowd: Sequence[float]) -> Choice:
    """``classify_threshold`` from the frames' p(crowd)."""
    return best_threshold(y_true, p_crowd)


def heat_area(heat, rule) -> float:
    """A frame's crowd area under ``rule`` (a :class:`~edge.contract.DecisionRule`): the share of
    its heat canvas above the frame's tile threshold, from statistics already measured."""
    return heat.area_above(rule.tile_threshold(heat.patches))


def calibrate_heatmap(y_true, heats: Sequence, thresholds: Sequence[float] = HEAT_THRESHOLDS,
                      base=None):
    """``(threshold, Choice of min_area)`` from the frames' heat statistics (their canvases).

    Each ``threshold`` (through ``base``'s background, when it has one, a tile threshold per
    frame: :meth:`~edge.contract.DecisionRule.tile_threshold`) gives every frame a crowd area;
    the best ``min_area`` on those areas is chosen as in :func:`best_threshold`. Across
    thresholds: the best balanced accuracy, then the higher crowd recall, then the threshold
    nearest 0.5 (the model's own argmax boundary)."""
    base = base if base is not None else DecisionRule()
    best = None
    for t in thresholds:
        rule = base.replace(threshold=float(t))
        areas = np.array([heat_area(h, rule) for h in heats])
        c = best_threshold(y_true, areas)
        key = (round(c.balanced_accuracy, 12), round(c.recall, 12), -abs(t - 0.5), -t)
        if best is None or key > best[0]:
            best = (key, float(t), c)
    return best[1], best[2]
