"""Vote-based (DEAR-style) metrics: pairs with many votes each, ties as half votes (REFERENCE.md).

Definitions (per pair, n = votes_0 + votes_1 + votes_tie, q = (votes_0 + 0.5 * votes_tie) / n, p = the model's
P(image 0 > image 1)):

- accuracy: agreement of the model's side (p > 0.5 -> image 0) with the majority side (q > 0.5 -> image 0) over
  pairs with q != 0.5; p == 0.5 exactly earns half credit (the expectation of a coin flip). 95% CI by a
  bootstrap that resamples groups with replacement.
- human_ceiling: mean(max(q, 1 - q)) over all pairs (the expected agreement of one vote with its pair's
  majority; `human_ceiling_decisive` is the same over the q != 0.5 pairs that accuracy uses).
- nll / brier / ece: of p against q, see `imgpref.eval.calibration` (10 equal-width bins of p for ECE).
- kendall_tau: per group, Kendall tau-b between the model's item scores and a Bradley-Terry fit of the group's
  votes (choix, ties as half votes); mean over groups where it is defined (>= 2 items, not constant).
- cyclic_triad_rate: over all groups, cyclic triads / triads whose three pairs were compared, with majorities
  from the votes summed over the rows of each item pair (`imgpref.eval.ranking.cyclic_triads`).
- model_cyclic_triad_rate: the same count over the same compared triads with the model's majorities: each row
  casts p for image 0 and 1 - p for image 1 (summed over the rows of an item pair). A scalar score can never be
  cyclic (rate 0); a pairwise (GPM) head can, and should match the votes' rate where the votes cycle.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from imgpref.eval import calibration as cal
from imgpref.eval.bootstrap import group_bootstrap_ci
from imgpref.eval.ranking import cyclic_triads, fit_bradley_terry, kendall_tau_b, wins_matrix


def vote_fractions(votes) -> np.ndarray:
    """q = (votes_0 + 0.5 * votes_tie) / n per row of a [P, 3] vote array."""
    v = np.asarray(votes, dtype=np.float64).reshape(-1, 3)
    n = v.sum(axis=1)
    if np.any(n <= 0) or np.any(v < 0):
        raise ValueError("every pair needs non-negative votes and at least one vote")
    return (v[:, 0] + 0.5 * v[:, 2]) / n


def majority_credit(p, votes) -> tuple[np.ndarray, np.ndarray]:
    """(credit, decisive) per pair: credit 1/0 for agreeing with the vote majority, 0.5 when p == 0.5;
    decisive is False for pairs with q == 0.5 (votes_0 == votes_1), which accuracy leaves out."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    v = np.asarray(votes, dtype=np.float64).reshape(-1, 3)
    maj0, maj1 = v[:, 0] > v[:, 1], v[:, 1] > v[:, 0]
    decisive = maj0 | maj1
    credit = np.where(p == 0.5, 0.5, np.where((p > 0.5) & maj0 | (p < 0.5) & maj1, 1.0, 0.0))
    return np.where(decisive, credit, 0.0), decisive


def _group_rank_stats(
    item_0: np.ndarray, item_1: np.ndarray, score_0: np.ndarray, score_1: np.ndarray, votes: np.ndarray,
    p_model: np.ndarray,
) -> tuple[int, float, int, int, int]:
    """(n_items, kendall tau-b, cyclic triads, triads, the model's cyclic triads) for the rows of one group."""
    keys, inv = np.unique(np.concatenate([item_0, item_1]).astype(str), return_inverse=True)
    n_items, n_rows = len(keys), len(item_0)
    idx0, idx1 = inv[:n_rows], inv[n_rows:]
    wins = wins_matrix(idx0, idx1, votes, n_items)
    # an item's model score: mean over its appearances (identical for prompt-free scorers)
    sums = np.bincount(inv, weights=np.concatenate([score_0, score_1]), minlength=n_items)
    model = sums / np.bincount(inv, minlength=n_items)
    tau = kendall_tau_b(model, fit_bradley_terry(wins)) if n_items >= 2 else float("nan")
    cyc, tri = cyclic_triads(wins)
    model_votes = np.stack([p_model, 1 - p_model, np.zeros_like(p_model)], axis=1)
    model_cyc, _ = cyclic_triads(wins_matrix(idx0, idx1, model_votes, n_items))
    return n_items, tau, cyc, tri, model_cyc


def vote_metrics(
    p_model,
    votes,
    groups=None,
    item_0=None,
    item_1=None,
    score_0=None,
    score_1=None,
    *,
    n_resamples: int = 1000,
    seed: int | None = 0,
    n_bins: int = 10,
    return_groups: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], pd.DataFrame]:
    """Vote-based metrics of `p_model` (P(0 > 1) per pair) against [P, 3] `votes` (see the module docstring).

    `groups` (scene/prompt id per pair; default: one group per pair) drive the bootstrap and the per-group
    statistics; `item_0`/`item_1` (image ids) and `score_0`/`score_1` (model scores, higher is better) enable
    Kendall tau and cyclic triads (NaN without them). With `return_groups=True` also returns the per-group table.
    """
    p = np.asarray(p_model, dtype=np.float64).reshape(-1)
    v = np.asarray(votes, dtype=np.float64).reshape(-1, 3)
    if p.shape[0] != v.shape[0]:
        raise ValueError(f"got {p.shape[0]} probabilities for {v.shape[0]} vote rows")
    n_pairs = p.shape[0]
    g = np.arange(n_pairs).astype(str) if groups is None else np.asarray(groups).astype(str).reshape(-1)
    if g.shape[0] != n_pairs:
        raise ValueError(f"got {g.shape[0]} group ids for {n_pairs} pairs")
    q = vote_fractions(v) if n_pairs else np.zeros(0)
    credit, decisive = majority_credit(p, v)
    n_dec = int(decisive.sum())
    acc = float(credit.sum() / n_dec) if n_dec else float("nan")
    lo, hi = group_bootstrap_ci(credit, g, decisive.astype(float), n_resamples=n_resamples, seed=seed)
    ceil = np.maximum(q, 1 - q)
    have_items = item_0 is not None and item_1 is not None and score_0 is not None and score_1 is not None
    if have_items:
        i0, i1 = np.asarray(item_0).astype(str).reshape(-1), np.asarray(item_1).astype(str).reshape(-1)
        sc0, sc1 = np.asarray(score_0, dtype=np.float64).reshape(-1), np.asarray(score_1, dtype=np.float64).reshape(-1)

    rows = []
    for label in pd.unique(g):
        m = g == label
        dm = decisive[m]
        n_items, tau, cyc, tri, mcyc = (
            _group_rank_stats(i0[m], i1[m], sc0[m], sc1[m], v[m], p[m]) if have_items
            else (0, float("nan"), 0, 0, 0)
        )
        rows.append(
            {
                "group": label,
                "n_pairs": int(m.sum()),
                "n_decisive": int(dm.sum()),
                "n_items": n_items,
                "accuracy": float(credit[m].sum() / dm.sum()) if dm.any() else float("nan"),
                "human_ceiling": float(ceil[m].mean()),
                "nll": cal.nll(p[m], q[m]),
                "brier": cal.brier(p[m], q[m]),
                "kendall_tau": tau,
                "cyclic_triads": cyc,
                "triads": tri,
                "model_cyclic_triads": mcyc,
            }
        )
    table = pd.DataFrame(
        rows,
        columns=["group", "n_pairs", "n_decisive", "n_items", "accuracy", "human_ceiling", "nll", "brier",
                 "kendall_tau", "cyclic_triads", "triads", "model_cyclic_triads"],
    )
    taus = table["kendall_tau"].to_numpy(dtype=np.float64)
    n_tri = int(table["triads"].sum())
    metrics: dict[str, Any] = {
        "accuracy": acc,
        "accuracy_ci": [lo, hi],
        "human_ceiling": float(ceil.mean()) if n_pairs else float("nan"),
        "human_ceiling_decisive": float(ceil[decisive].mean()) if n_dec else float("nan"),
        "nll": cal.nll(p, q),
        "nll_floor": cal.nll_floor(q),
        "brier": cal.brier(p, q),
        "ece": cal.ece(p, q, n_bins),
        "kendall_tau": float(np.nanmean(taus)) if np.isfinite(taus).any() else float("nan"),
        "n_groups_tau": int(np.isfinite(taus).sum()),
        "cyclic_triad_rate": float(table["cyclic_triads"].sum() / n_tri) if n_tri else float("nan"),
        "model_cyclic_triad_rate": float(table["model_cyclic_triads"].sum() / n_tri) if n_tri else float("nan"),
        "n_triads": n_tri,
        "n_pairs": int(n_pairs),
        "n_decisive": n_dec,
        "n_groups": int(len(table)),
        "n_votes": int(v.sum()),
    }
    return (metrics, table) if return_groups else metrics
