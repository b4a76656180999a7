"""Report arithmetic: Welch's and the paired t-test against scipy's, the paper's values."""
from __future__ import annotations

import pytest
import scipy.stats as sp

from train.experiments import stats
from train.experiments.paper_results import PAPER, lookup


@pytest.mark.parametrize("a,b", [([66.1, 65.2, 67.0, 66.4, 65.9], [64.7, 65.1, 64.0, 65.5, 64.4]),
                                 ([1.0, 2.0, 3.0], [2.0, 2.5, 7.0, 1.0])])
def test_welch_matches_scipy(a, b):
    ref = sp.ttest_ind(a, b, equal_var=False)
    w = stats.welch(a, b)
    assert w.p == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = ref.confidence_interval(0.95)
    assert (w.lo, w.hi) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))


def test_welch_needs_two_values_a_side():
    assert stats.welch([1.0], [1.0, 2.0]) is None
    assert stats.mean_std([2.0]) == (2.0, 0.0)


def test_paper_values():
    assert lookup("cifar10", "cifar_cnn", 64, "posd", 4, None).mean == 66.782          # Table 3
    assert lookup("svhn", "cifar_cnn", 128, "ce", None, None).mean == 88.013           # Table 4
    assert lookup("cifar10", "cifar_cnn", 64, "posd", 4, 1e-4).table == "Table 1"
    assert lookup("crowd_synth", "crowd_fcn", 32, "posd", 2, None).mean == 97.672      # Table 6
    assert lookup("cifar100", "wrn_20_8", 128, "posd", 2, None).mean == 80.80          # Table 13
    assert lookup("digits", "cifar_cnn", 64, "ce", None, None) is None
    assert len({r.table for r in PAPER}) == 14                # Tables 1-13 + the KD numbers in the text


def test_paired_matches_scipy():
    a, b = [96.1, 92.4, 96.9, 95.6, 97.2], [95.9, 92.2, 96.8, 95.5, 97.0]
    ref = sp.ttest_rel(a, b)
    res = stats.paired(a, b)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = ref.confidence_interval(0.95)
    assert (res.lo, res.hi) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
