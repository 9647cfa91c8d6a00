"""Calibration metrics (NLL / Brier / ECE, reliability diagram) and the group bootstrap."""
import math

import numpy as np
import pytest

from imgpref.eval import calibration as cal
from imgpref.eval.bootstrap import bootstrap_ratio_ci, group_bootstrap_ci, group_sums


def test_nll_and_brier_equal_sklearn_on_hard_labels():
    from sklearn.metrics import brier_score_loss, log_loss

    p = np.array([0.9, 0.2, 0.6, 0.4])
    y = np.array([1, 0, 0, 1])
    assert cal.nll(p, y) == pytest.approx(log_loss(y, p))
    assert cal.brier(p, y) == pytest.approx(brier_score_loss(y, p))


def test_nll_soft_targets_and_floor():
    # q = 0.5, p = 0.5: -(0.5 log .5 + 0.5 log .5) = log 2 = the floor
    assert cal.nll([0.5], [0.5]) == pytest.approx(math.log(2))
    assert cal.nll_floor([0.5, 1.0]) == pytest.approx(math.log(2) / 2)
    assert math.isfinite(cal.nll([1.0], [0.0]))  # clipped, not inf


def test_ece_bins_by_hand():
    # p = 0.05, 0.15 (bins 0, 1), p = 1.0 falls in the last bin (9) together with 0.95
    # bin 0: |0 - 0.05| = 0.05; bin 1: |1 - 0.15| = 0.85; bin 9: mean p 0.975, mean q 0.5 -> 0.475
    # ECE = (0.05 + 0.85 + 2 * 0.475) / 4 = 0.4625
    p = [0.05, 0.15, 1.0, 0.95]
    q = [0.0, 1.0, 0.0, 1.0]
    bins = cal.reliability_bins(p, q)
    assert bins["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert cal.ece(p, q) == pytest.approx(0.4625)
    assert cal.ece([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)


def test_reliability_diagram_png(tmp_path):
    path = cal.reliability_diagram([0.2, 0.8, 0.6], [0.1, 0.9, 0.5], tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_probabilities():
    with pytest.raises(ValueError, match="same length"):
        cal.brier([0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="probabilities"):
        cal.ece([1.5], [0.5])


def test_bootstrap_matches_a_direct_resampling():
    values = np.array([1, 0, 1, 1, 0, 1, 1.0])
    groups = np.array(["a", "a", "b", "c", "c", "c", "d"])
    labels, num, den = group_sums(values, groups)
    assert labels.tolist() == ["a", "b", "c", "d"] and num.tolist() == [1, 1, 2, 1] and den.tolist() == [2, 1, 3, 1]
    lo, hi = group_bootstrap_ci(values, groups, n_resamples=500, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 4, size=(500, 4))
    stats = num[idx].sum(1) / den[idx].sum(1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))
    assert lo <= values.mean() <= hi
    # same seed, same interval; groups with equal means give a zero-width interval
    assert group_bootstrap_ci(values, groups, n_resamples=500, seed=3) == (lo, hi)
    assert bootstrap_ratio_ci([1, 2, 3], [2, 4, 6]) == pytest.approx((0.5, 0.5))
    assert all(math.isnan(x) for x in bootstrap_ratio_ci([], []))
