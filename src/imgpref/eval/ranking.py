"""Rankings inside one group: Bradley-Terry fit of votes (choix), Kendall tau-b, cyclic triads."""
from __future__ import annotations

import warnings

import numpy as np

# A little regularisation keeps the BT fit finite when an item wins every vote (perfect separation, common with
# 25 votes on an obvious pair); it only shrinks the ratings and never reorders them.
BT_ALPHA = 0.01


def wins_matrix(item_0, item_1, votes, n_items: int) -> np.ndarray:
    """W[i, j] = votes for item i against item j, summed over rows; a tie vote is half a win for each side.

    `item_0`, `item_1`: integer item indices per row; `votes`: [P, 3] counts (votes_0, votes_1, votes_tie).
    """
    i0 = np.asarray(item_0, dtype=np.int64).reshape(-1)
    i1 = np.asarray(item_1, dtype=np.int64).reshape(-1)
    v = np.asarray(votes, dtype=np.float64).reshape(-1, 3)
    if not (i0.shape[0] == i1.shape[0] == v.shape[0]):
        raise ValueError("item_0, item_1 and votes must have the same number of rows")
    w = np.zeros((n_items, n_items), dtype=np.float64)
    np.add.at(w, (i0, i1), v[:, 0] + 0.5 * v[:, 2])
    np.add.at(w, (i1, i0), v[:, 1] + 0.5 * v[:, 2])
    return w


def fit_bradley_terry(wins: np.ndarray, alpha: float = BT_ALPHA) -> np.ndarray:
    """Bradley-Terry ratings (log-strengths, mean 0) from a wins matrix, via `choix.ilsr_pairwise_dense`.

    Fractional (half) votes are fine. If choix cannot converge (e.g. items that were never compared with the
    rest), falls back to each item's win share, which orders items the same way on complete designs.
    """
    import choix

    wins = np.asarray(wins, dtype=np.float64)
    n = wins.shape[0]
    if n <= 1:
        return np.zeros(n)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = choix.ilsr_pairwise_dense(wins, alpha=alpha)
        if np.all(np.isfinite(params)):
            return params - params.mean()
    except (ValueError, RuntimeError, np.linalg.LinAlgError):
        pass
    played = wins.sum(axis=1) + wins.sum(axis=0)
    share = np.divide(wins.sum(axis=1), played, out=np.full(n, 0.5), where=played > 0)
    return share - share.mean()


def kendall_tau_b(x, y) -> float:
    """Kendall tau-b between two score vectors (scipy.stats.kendalltau); NaN when undefined (n < 2, constant)."""
    from scipy.stats import kendalltau

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size < 2 or x.size != y.size:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = kendalltau(x, y, variant="b")
    return float(res.statistic)


def cyclic_triads(wins: np.ndarray) -> tuple[int, int]:
    """(cyclic, eligible) triads of items whose three pairs were all compared.

    The majority of a pair is the side with more (tie-as-half) votes; a tied pair has no direction and so can
    never close a cycle. A triad is cyclic when its three majorities go round (a > b > c > a).
    """
    w = np.asarray(wins, dtype=np.float64)
    n = w.shape[0]
    compared = (w + w.T) > 0
    beats = w > w.T
    cyc = tot = 0
    for a in range(n):
        for b in range(a + 1, n):
            if not compared[a, b]:
                continue
            for c in range(b + 1, n):
                if not (compared[a, c] and compared[b, c]):
                    continue
                tot += 1
                if (beats[a, b] and beats[b, c] and beats[c, a]) or (beats[b, a] and beats[c, b] and beats[a, c]):
                    cyc += 1
    return cyc, tot
