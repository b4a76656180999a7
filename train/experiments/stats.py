"""Mean, sample standard deviation, Welch's and the paired t-test; the Student-t distribution is
scipy's (installed with scikit-learn, part of the ``train`` extra)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy.stats import t as t_dist


@dataclass(frozen=True)
class TTest:
    """A t-test of a difference of means: the difference, its confidence interval [lo, hi], the
    two-sided p-value and the degrees of freedom (None when read back from a results.csv, which
    does not record them)."""
    diff: float
    lo: float
    hi: float
    p: float
    df: Optional[float] = None


def mean_std(xs: Sequence[float]) -> tuple:
    """Mean and *sample* standard deviation (ddof=1; 0 for a single value)."""
    n = len(xs)
    m = sum(xs) / n
    var = sum((x - m) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return m, math.sqrt(var)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[TTest]:
    """Welch's unequal-variance t-test of mean(a) - mean(b): the difference, its ``level``
    confidence interval, the two-sided p-value and the Welch-Satterthwaite degrees of freedom.
    None when either side has fewer than 2 values (no variance to estimate)."""
    if len(a) < 2 or len(b) < 2:
        return None
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    diff, se = ma - mb, math.sqrt(va + vb)
    if se == 0.0:
        return TTest(diff, diff, diff, 0.0 if diff else 1.0, float("inf"))
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    t = diff / se
    p, q = _t_sf2(abs(t), df), _t_ppf((1 + level) / 2, df)
    return TTest(diff, diff - q * se, diff + q * se, p, df)


def _t_sf2(t: float, df: float) -> float:
    """Two-sided p-value P(|T| > t) of Student's t with ``df`` degrees of freedom."""
    return float(2 * t_dist.sf(t, df))


def _t_ppf(prob: float, df: float) -> float:
    return float(t_dist.ppf(prob, df))


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[TTest]:
    """Paired t-test of a[i] - b[i] (the same seed: in this toolkit the seed fixes the initial
    weights, the batch order and the augmentation, so runs of two methods with one seed differ
    only by the method). None with fewer than 2 pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    m, s = mean_std([x - y for x, y in zip(a, b)])
    se, df = s / math.sqrt(len(a)), float(len(a) - 1)
    if se == 0.0:
        return TTest(m, m, m, 0.0 if m else 1.0, df)
    q = _t_ppf((1 + level) / 2, df)
    return TTest(m, m - q * se, m + q * se, _t_sf2(abs(m / se), df), df)
