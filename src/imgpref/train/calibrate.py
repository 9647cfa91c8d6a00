"""Post-hoc temperature for pairwise probabilities: P(0 > 1) = sigmoid(bt_scale * (s0 - s1)).

`fit_bt_scale` picks the scalar bt_scale > 0 that minimises the binary cross-entropy of that probability against
the vote fractions q of a validation split (a proper scoring rule, so the result is calibrated on average).
Only one number is fitted, so the ranking (and accuracy) of the scorer is unchanged. The result is stored in
`scorer.info.extra["bt_scale"]`, which `imgpref eval` uses for the votes protocol.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def bt_nll(scale: float, diff: np.ndarray, q: np.ndarray) -> float:
    """Mean -(q log p + (1-q) log(1-p)) with p = sigmoid(scale * diff), computed stably."""
    z = scale * np.asarray(diff, dtype=np.float64)
    # log sigmoid(z) = -softplus(-z); log(1 - sigmoid(z)) = -softplus(z)
    return float(np.mean(q * np.logaddexp(0.0, -z) + (1 - q) * np.logaddexp(0.0, z)))


def fit_bt_scale(s0, s1, q, *, bounds: tuple[float, float] = (1e-3, 1e3)) -> float:
    """The bt_scale in `bounds` minimising the validation NLL (golden-section search on log scale, then Newton).

    s0, s1: scores of image 0 / image 1 per pair; q: vote fraction for image 0 (ties half). Returns 1.0 for
    empty input or when the score differences are all zero (no information).
    """
    d = np.asarray(torch.as_tensor(s0).double().cpu().numpy() - torch.as_tensor(s1).double().cpu().numpy()
                   ).reshape(-1)
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if d.shape != q.shape:
        raise ValueError(f"got {d.shape[0]} score pairs and {q.shape[0]} vote fractions")
    ok = np.isfinite(d) & np.isfinite(q)
    d, q = d[ok], q[ok]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    f = lambda t: bt_nll(math.exp(t), d, q)  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, e = b - g * (b - a), a + g * (b - a)
    fc, fe = f(c), f(e)
    for _ in range(80):  # the NLL is convex in the scale, so golden-section on log(scale) finds the minimum
        if fc < fe:
            b, e, fe = e, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, e, fe
            e = a + g * (b - a)
            fe = f(e)
    k = math.exp((a + b) / 2)
    for _ in range(20):  # Newton polish on the scale itself
        p = 1 / (1 + np.exp(-k * d))
        grad = float(np.mean((p - q) * d))
        hess = float(np.mean(p * (1 - p) * d * d))
        if hess <= 1e-15:
            break
        step = grad / hess
        k_new = min(max(k - step, bounds[0]), bounds[1])
        if abs(k_new - k) < 1e-12 * max(1.0, k):
            k = k_new
            break
        k = k_new
    return float(k)
