"""edge.metrics against scikit-learn, and thresholds chosen where the right answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from edge.heatmap import HeatStats
from edge.metrics import (balanced_accuracy, best_threshold, calibrate_heatmap, confusion_matrix,
                          roc_auc, summarize)

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1                                    # both classes present
    score = np.round(rng.random(n) * (y * 0.5 + 0.5), 1)  # coarse: many ties
    pred = score >= 0.4
    assert roc_auc(y, score) == pytest.approx(sk.roc_auc_score(y, score), abs=1e-12)
    assert balanced_accuracy(y, pred) == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-12)
    np.testing.assert_array_equal(confusion_matrix(y, pred), sk.confusion_matrix(y, pred, labels=[1, 0]))


def test_auc_edge_cases_and_summary():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))           # one class: undefined
    s = summarize([1, 1, 0, 0, 0], [1, 0, 0, 0, 1], [0.9, 0.4, 0.1, 0.2, 0.7])
    assert s["confusion"] == [[1, 1], [1, 2]] and s["recall_positive"] == 0.5
    assert s["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-6)
    assert summarize([0, 0], [0, 1], [0.1, 0.9])["roc_auc"] is None     # JSON null, not NaN
    with pytest.raises(ValueError, match="0/1"):
        summarize([2, 0], [0, 0], [0.1, 0.2])


def test_best_threshold_known_cases():
    c = best_threshold([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.35, 0.3, 0.2, 0.1])
    assert c.threshold == pytest.approx(0.325) and c.balanced_accuracy == 1.0 and c.recall == 1.0
    # overlap: 0.25 and 0.7 both give 0.75 balanced accuracy; safety first takes full recall
    c = best_threshold([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert c.threshold == pytest.approx(0.25) and c.balanced_accuracy == 0.75 and c.recall == 1.0
    assert 0 < best_threshold([1, 0], [0.0, 0.0]).threshold < 1          # degenerate, still valid
    with pytest.raises(ValueError, match="both classes"):
        best_threshold([1, 1], [0.2, 0.9])


def _heat(cells_hot, cells_warm, n=100):
    canvas = np.zeros(n, np.float32)
    canvas[:cells_hot] = 0.8
    canvas[cells_hot:cells_hot + cells_warm] = 0.3
    return HeatStats(canvas[None], 0.8, float(canvas.mean()), 0.0, 0.5, "dense", canvas[None])


def test_heatmap_calibration_finds_the_known_rule():
    # crowd frames: 10% of the area hot; empty frames: 3% hot and 30% warm (dense decoys)
    heats = [_heat(10, 0), _heat(12, 5), _heat(3, 30), _heat(2, 30), _heat(0, 40)]
    y = [1, 1, 0, 0, 0]
    t, c = calibrate_heatmap(y, heats)
    # every threshold in [0.3, 0.8) separates perfectly; the one nearest 0.5 is kept, and the
    # minimum area sits mid-gap between the largest empty area (0.03) and the smallest crowd one
    assert t == 0.5 and c.balanced_accuracy == 1.0
    assert c.threshold == pytest.approx((0.03 + 0.10) / 2)
    assert heats[2].area_above(0.25) == pytest.approx(0.33)
