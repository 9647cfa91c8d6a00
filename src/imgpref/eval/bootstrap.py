"""Bootstrap confidence intervals that resample whole groups (scenes or prompts).

Pairs of one group share images and annotators, so they are not independent; resampling pairs would give
intervals that are too narrow. Every statistic here is a ratio of per-group sums, which covers pooled accuracy
(numerator = correct pairs, denominator = pairs) and per-group means (numerator = group metric, denominator = 1).
"""
from __future__ import annotations

import numpy as np


def group_sums(values, groups, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum `values` (and `weights`, default 1) per group. Returns (group labels, numerators, denominators)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups, dtype=object).reshape(-1)
    if not (values.shape == weights.shape == groups.shape):
        raise ValueError("values, weights and groups must have the same length")
    labels, inv = np.unique(groups.astype(str), return_inverse=True)
    num = np.bincount(inv, weights=values * weights, minlength=len(labels)) if values.size else np.zeros(0)
    den = np.bincount(inv, weights=weights, minlength=len(labels)) if values.size else np.zeros(0)
    return labels, num, den


def _check_resampling(level: float, n_resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; got {n_resamples}")


def bootstrap_ratio_ci(
    numerators,
    denominators,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Percentile CI of sum(num) / sum(den) when groups are drawn with replacement `n_resamples` times.

    Resamples whose denominator sums to 0 are dropped. Returns (nan, nan) when there is no group.
    """
    num = np.asarray(numerators, dtype=np.float64).reshape(-1)
    den = np.asarray(denominators, dtype=np.float64).reshape(-1)
    if num.shape != den.shape:
        raise ValueError("numerators and denominators must have the same length")
    _check_resampling(level, n_resamples)
    g = num.size
    if g == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, g, size=(n_resamples, g))
    tot_num = num[idx].sum(axis=1)
    tot_den = den[idx].sum(axis=1)
    ok = tot_den > 0
    if not ok.any():
        return float("nan"), float("nan")
    stats = tot_num[ok] / tot_den[ok]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def group_bootstrap_ci(
    values,
    groups,
    weights=None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float]:
    """CI of the weighted mean of per-pair `values` (e.g. 0/1 correct), resampling `groups` with replacement."""
    _, num, den = group_sums(values, groups, weights)
    return bootstrap_ratio_ci(num, den, n_resamples, level, seed)


def group_bootstrap_stat(
    statistic,
    groups,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Percentile CI of any `statistic(rows)` (rows: int indices of the pairs drawn) when whole groups are drawn
    with replacement, for statistics that are not ratios of per-group sums (e.g. ECE). NaN results are dropped."""
    _check_resampling(level, n_resamples)
    labels, inv = np.unique(np.asarray(groups, dtype=object).astype(str).reshape(-1), return_inverse=True)
    if labels.size == 0:
        return float("nan"), float("nan")
    members = [np.flatnonzero(inv == k) for k in range(labels.size)]
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(np.concatenate([members[k] for k in draw]))
                      for draw in rng.integers(0, labels.size, size=(n_resamples, labels.size))], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)
