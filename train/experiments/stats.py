"""Mean, sample standard deviation and Welch's t-test, with scipy when it is installed and a
plain implementation otherwise (the two agree to ~1e-10; tests check it)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence


def mean_std(xs: Sequence[float]) -> tuple:
    """Mean and *sample* standard deviation (ddof=1; 0 for a single value)."""
    n = len(xs)
    m = sum(xs) / n
    var = sum((x - m) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return m, math.sqrt(var)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[Dict[str, float]]:
    """Welch's unequal-variance t-test of mean(a) - mean(b): the difference, its ``level``
    confidence interval, the two-sided p-value and the Welch-Satterthwaite degrees of freedom.
    None when either side has fewer than 2 values (no variance to estimate)."""
    if len(a) < 2 or len(b) < 2:
        return None
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    diff, se = ma - mb, math.sqrt(va + vb)
    if se == 0.0:
        return {"diff": diff, "lo": diff, "hi": diff, "p": 0.0 if diff else 1.0, "df": float("inf")}
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    t = diff / se
    p, q = _t_sf2(abs(t), df), _t_ppf((1 + level) / 2, df)
    return {"diff": diff, "lo": diff - q * se, "hi": diff + q * se, "p": p, "df": df}


def _t_sf2(t: float, df: float) -> float:
    """Two-sided p-value P(|T| > t) of Student's t with ``df`` degrees of freedom."""
    try:
        from scipy import stats
        return float(2 * stats.t.sf(t, df))
    except ImportError:
        return plain_t_sf2(t, df)


def _t_ppf(prob: float, df: float) -> float:
    try:
        from scipy import stats
        return float(stats.t.ppf(prob, df))
    except ImportError:
        return plain_t_ppf(prob, df)


def plain_t_sf2(t: float, df: float) -> float:
    """P(|T| > t) = I_x(df/2, 1/2) with x = df / (df + t^2) (regularised incomplete beta)."""
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def plain_t_ppf(prob: float, df: float) -> float:
    """The ``prob`` quantile (prob > 0.5) by bisection on the two-sided tail."""
    target, lo, hi = 2 * (1 - prob), 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if plain_t_sf2(mid, df) > target else (lo, mid)
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the incomplete beta (Numerical Recipes, 6.4)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[Dict[str, float]]:
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
        return {"diff": m, "lo": m, "hi": m, "p": 0.0 if m else 1.0, "df": df}
    q = _t_ppf((1 + level) / 2, df)
    return {"diff": m, "lo": m - q * se, "hi": m + q * se, "p": _t_sf2(abs(m / se), df), "df": df}
