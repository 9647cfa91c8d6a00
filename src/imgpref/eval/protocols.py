"""The published pairwise-accuracy protocols (REFERENCE.md, "Evaluation protocols"), as pure numpy functions.

Scores are "higher is better" here; the caller negates lower-is-better scorers first. Labels follow the
Pick-a-Pic convention: the index of the winning image (0 or 1), 0.5 for a tie.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Pick-a-Pic tie-threshold grid 0.0, 0.1, ..., 1.0 (exact decimals, so t = 0.3 is the float nearest 0.3).
PICKAPIC_GRID: tuple[float, ...] = tuple(i / 10 for i in range(11))


def _vec(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; score the images again or drop those pairs")
    return a


def _check_labels(label: np.ndarray) -> None:
    bad = ~np.isin(label, (0.0, 0.5, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0, 1 or 0.5 (tie); got {label[bad][:5].tolist()}")


def labels_from_votes(votes) -> np.ndarray:
    """Majority label per pair from [P, 3] vote counts: 0 if votes_0 > votes_1, 1 if fewer, 0.5 if equal."""
    v = np.asarray(votes, dtype=np.float64).reshape(-1, 3)
    return np.where(v[:, 0] > v[:, 1], 0.0, np.where(v[:, 0] < v[:, 1], 1.0, 0.5))


# Pick-a-Pic ---------------------------------------------------------------------------------------------------
def pickapic_predictions(s0, s1, threshold: float) -> np.ndarray:
    """Predicted label per pair: p = softmax([s0, s1]); a tie (0.5) when |p1 - p0| <= threshold (inclusive)."""
    s0, s1 = _vec(s0, "s0"), _vec(s1, "s1")
    m = np.maximum(s0, s1)  # stable softmax
    e0, e1 = np.exp(s0 - m), np.exp(s1 - m)
    p0, p1 = e0 / (e0 + e1), e1 / (e0 + e1)
    return np.where(np.abs(p1 - p0) <= threshold, 0.5, np.where(p0 > p1, 0.0, 1.0))


def pickapic_example_scores(s0, s1, label, threshold: float) -> np.ndarray:
    """Per-pair credit: 1 for an exact match, 0.5 for a mismatch involving a tie (either side), else 0."""
    label = _vec(label, "label")
    _check_labels(label)
    pred = pickapic_predictions(s0, s1, threshold)
    if pred.shape != label.shape:
        raise ValueError(f"got {pred.shape[0]} score pairs for {label.shape[0]} labels")
    return np.where(pred == label, 1.0, np.where((pred == 0.5) | (label == 0.5), 0.5, 0.0))


def pickapic_accuracy(s0, s1, label, threshold: float) -> float:
    """Pick-a-Pic accuracy with tie threshold `threshold` (mean of `pickapic_example_scores`)."""
    scores = pickapic_example_scores(s0, s1, label, threshold)
    return float(scores.mean()) if scores.size else float("nan")


def tune_pickapic_threshold(s0_val, s1_val, label_val, grid: Sequence[float] = PICKAPIC_GRID) -> float:
    """The tie threshold of `grid` with the highest validation accuracy; the first maximum wins."""
    if len(np.asarray(label_val).reshape(-1)) == 0:
        raise ValueError("no validation pairs to tune the Pick-a-Pic tie threshold on; add a 'val' split or pass a threshold")
    accs = [pickapic_accuracy(s0_val, s1_val, label_val, t) for t in grid]
    return float(grid[int(np.argmax(accs))])  # argmax returns the first maximum


# HPD v2 -------------------------------------------------------------------------------------------------------
def hpd_prompt_accuracy(scores, human_ranks) -> float:
    """1 - inversions / pairs for one prompt's images (rank 1 = best).

    Model ranks come from a stable argsort of -scores, so tied scores rank the earlier image higher. Pairs tied
    in the human ranks count in the denominator and are never inversions. NaN for fewer than 2 images.
    """
    s = _vec(scores, "scores")
    h = _vec(human_ranks, "human_ranks")
    if s.shape != h.shape:
        raise ValueError(f"got {s.size} scores for {h.size} human ranks")
    n = s.size
    if n < 2:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    model_rank = np.empty(n, dtype=np.int64)
    model_rank[order] = np.arange(1, n + 1)
    i, j = np.triu_indices(n, k=1)
    inversions = np.sum((h[i] - h[j]) * (model_rank[i] - model_rank[j]) < 0)
    return float(1.0 - inversions / i.size)


def hpd_accuracy(scores_per_prompt: Sequence, human_ranks_per_prompt: Sequence) -> float:
    """HPD v2 accuracy: `hpd_prompt_accuracy` averaged over rankings (rankings with < 2 images are skipped).

    One ranking is one entry of the published file, i.e. one manifest `group` as the readers write it, never
    all entries that share a prompt text: merging two rankings of one prompt would count pairs nobody compared.
    """
    if len(scores_per_prompt) != len(human_ranks_per_prompt):
        raise ValueError("scores_per_prompt and human_ranks_per_prompt must have one entry per prompt")
    accs = [hpd_prompt_accuracy(s, r) for s, r in zip(scores_per_prompt, human_ranks_per_prompt)]
    accs = [a for a in accs if not np.isnan(a)]
    return float(np.mean(accs)) if accs else float("nan")


def ranks_from_pairs(item_0, item_1, label, n_items: int) -> np.ndarray:
    """Human ranks (1 = best) of one prompt's items from its pairwise labels: 1 + number of items that beat it.

    For the complete set of pairs of a ranking (what `data convert --from hpdv2` writes) this gives back the
    original ranks, ties included (competition ranking), which is all the inversion count looks at.
    """
    i0 = np.asarray(item_0, dtype=np.int64).reshape(-1)
    i1 = np.asarray(item_1, dtype=np.int64).reshape(-1)
    lab = _vec(label, "label")
    _check_labels(lab)
    beaten = np.zeros((n_items, n_items), dtype=bool)  # beaten[a, b]: b beats a
    beaten[i0[lab == 1.0], i1[lab == 1.0]] = True
    beaten[i1[lab == 0.0], i0[lab == 0.0]] = True
    return 1.0 + beaten.sum(axis=1)


# ImageReward --------------------------------------------------------------------------------------------------
def imagereward_correct(s0, s1, label) -> tuple[np.ndarray, np.ndarray]:
    """(correct, counted) per pair: human ties are not counted; a model tie (s0 == s1) counts as wrong."""
    s0, s1, label = _vec(s0, "s0"), _vec(s1, "s1"), _vec(label, "label")
    _check_labels(label)
    counted = label != 0.5
    correct = counted & (((label == 0.0) & (s0 > s1)) | ((label == 1.0) & (s1 > s0)))
    return correct.astype(np.float64), counted.astype(np.float64)


def imagereward_accuracy(s0, s1, label, groups=None, per_prompt: bool = False) -> float:
    """ImageReward test accuracy.

    `per_prompt=False` (the ImageReward protocol): pooled over all counted pairs of all prompts.
    `per_prompt=True` (HPSv2's variant): the mean over prompts (`groups`) of each prompt's accuracy; prompts
    whose pairs are all human ties are skipped. The two differ (by ~0.01 on the real test set): report which.
    """
    correct, counted = imagereward_correct(s0, s1, label)
    if not per_prompt:
        return float(correct.sum() / counted.sum()) if counted.sum() else float("nan")
    if groups is None:
        raise ValueError("per_prompt=True needs groups (one prompt id per pair)")
    g = np.asarray(groups).astype(str).reshape(-1)
    if g.size != correct.size:
        raise ValueError(f"got {g.size} group ids for {correct.size} pairs")
    _, inv = np.unique(g, return_inverse=True)
    num = np.bincount(inv, weights=correct)
    den = np.bincount(inv, weights=counted)
    keep = den > 0
    return float(np.mean(num[keep] / den[keep])) if keep.any() else float("nan")
