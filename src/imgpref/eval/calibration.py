"""Calibration of a predicted P(0 > 1) against observed vote fractions q (soft targets).

All functions take the orientation as given: `p` is the model's probability that image 0 beats image 1 and `q`
the human share for image 0 (ties as half votes). Nothing is flipped or folded, so a model that is right but
over-confident on either side shows up in the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# p is clipped before the log so that a model that says exactly 0 or 1 gets a large but finite NLL.
_EPS = 1e-7


def _as_pq(p, q) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same length; got {p.shape[0]} and {q.shape[0]}")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.nanmin(q) < 0 or np.nanmax(q) > 1):
        raise ValueError("p and q must be probabilities in [0, 1]")
    return p, q


def nll(p, q) -> float:
    """Mean binary cross-entropy -(q log p + (1-q) log(1-p)); p clipped to [1e-7, 1-1e-7].

    With soft targets its minimum is the mean entropy of q (`nll_floor`), not 0.
    """
    p, q = _as_pq(p, q)
    if p.size == 0:
        return float("nan")
    pc = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(q * np.log(pc) + (1 - q) * np.log1p(-pc)))


def nll_floor(q) -> float:
    """The NLL a perfectly calibrated model (p = q) reaches: the mean binary entropy of q."""
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.size == 0:
        return float("nan")
    qc = np.clip(q, _EPS, 1 - _EPS)
    h = -(qc * np.log(qc) + (1 - qc) * np.log1p(-qc))
    return float(np.mean(np.where((q == 0) | (q == 1), 0.0, h)))


def brier(p, q) -> float:
    """Mean squared difference (p - q)^2 between predicted probability and vote fraction."""
    p, q = _as_pq(p, q)
    return float(np.mean((p - q) ** 2)) if p.size else float("nan")


def reliability_bins(p, q, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per-bin count, mean p and mean q for `n_bins` equal-width bins of p over [0, 1].

    Bin b holds b/n <= p < (b+1)/n; p = 1 falls in the last bin. Empty bins have count 0 and NaN means.
    """
    p, q = _as_pq(p, q)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_q = np.bincount(idx, weights=q, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / np.maximum(count, 1), np.nan)
        mean_q = np.where(count > 0, sum_q / np.maximum(count, 1), np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"count": count, "mean_p": mean_p, "mean_q": mean_q, "edges": edges}


def ece(p, q, n_bins: int = 10) -> float:
    """Expected calibration error against vote fractions.

    ECE = sum_b (n_b / N) * |mean(q in b) - mean(p in b)| over `n_bins` equal-width bins of the predicted p
    (see `reliability_bins`), weighted by count, on the orientation as given.
    """
    bins = reliability_bins(p, q, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    keep = bins["count"] > 0
    gap = np.abs(bins["mean_q"][keep] - bins["mean_p"][keep])
    return float(np.sum(bins["count"][keep] / n * gap))


def reliability_diagram(p, q, path: str | Path, n_bins: int = 10, title: str = "") -> Path:
    """Write a reliability diagram (mean vote fraction vs mean predicted P(0>1) per bin, plus counts) as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # Figure without pyplot: no global state, no GUI backend

    bins = reliability_bins(p, q, n_bins)
    keep = bins["count"] > 0
    centers = (bins["edges"][:-1] + bins["edges"][1:]) / 2
    fig = Figure(figsize=(5, 6))
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.plot(bins["mean_p"][keep], bins["mean_q"][keep], marker="o", label="model")
    ax.set_ylabel("mean vote fraction q")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(f"{title or 'Reliability'} (ECE = {ece(p, q, n_bins):.3f}, {int(bins['count'].sum())} pairs)")
    axc.bar(centers, bins["count"], width=1.0 / n_bins, edgecolor="black", color="tab:blue", alpha=0.6)
    axc.set_xlabel("predicted P(image 0 > image 1)")
    axc.set_ylabel("pairs")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")  # the path may be an atomic-write temp name
    return path
