"""Small-sample statistics for comparing runs: mean ± spread, Student-t intervals, Welch's difference.

A few seeds per variant is a small sample, so intervals use Student's t distribution (with Welch's
degrees of freedom for a difference of two means). The t quantile is computed here (numerical
integration of the t density, then bisection) so no statistics package is needed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95


def _t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom, x >= 0 (Simpson's rule on the density)."""
    if x <= 0:
        return 0.5
    n = 4000  # even; the density is smooth on [0, x]
    t = np.linspace(0.0, x, n + 1)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
    weights = np.ones(n + 1)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return 0.5 + float(np.dot(weights, pdf)) * x / n / 3


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` > 0 degrees of freedom."""
    if not 0.5 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df > 0, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """n, mean, sample standard deviation (the spread between seeds) and the t-interval of the mean:
    ``mean ± half_width`` covers the true mean with probability ``confidence``. With n = 1 there is
    no spread and no interval (None)."""
    x = np.asarray(list(values), dtype=float)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "half_width": None, "low": None, "high": None,
                "confidence": confidence, "values": []}
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else None
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "half_width": half,
            "low": None if half is None else mean - half, "high": None if half is None else mean + half,
            "confidence": confidence, "values": [float(v) for v in x]}


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """mean(a) - mean(b) with its Welch t-interval: ``diff``, ``half_width``, ``df``, ``n_a``, ``n_b``.
    ``half_width`` is None when either side has a single value, 0.0 when every value on both sides is
    the same within its side (no noise measured)."""
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    out = {"diff": float(a.mean() - b.mean()) if a.size and b.size else None, "half_width": None, "df": None,
           "n_a": int(a.size), "n_b": int(b.size), "confidence": confidence}
    if a.size < 2 or b.size < 2:
        return out
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        out.update(half_width=0.0)
        return out
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    out.update(half_width=t_quantile(0.5 + confidence / 2, df) * se, df=float(df))
    return out
