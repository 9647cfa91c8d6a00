"""Vote-based (DEAR-style) metrics on a hand-worked example, plus their building blocks."""
import math

import numpy as np
import pytest

from imgpref.eval.ranking import cyclic_triads, fit_bradley_terry, kendall_tau_b, wins_matrix
from imgpref.eval.votes import vote_fractions, vote_metrics


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_vote_metrics_hand_worked():
    # Group A: items a, b, c with model scores 2, 1, 0 -> p = sigmoid(s0 - s1)
    #   (a,b) votes 8/1/1: q = 8.5/10 = 0.85, p = sig(1) = 0.7311  -> majority a, model a: correct
    #   (b,c) votes 3/5/2: q = 4/10   = 0.40, p = sig(1) = 0.7311  -> majority c, model b: wrong
    #   (a,c) votes 6/2/2: q = 7/10   = 0.70, p = sig(2) = 0.8808  -> correct
    # Group B: items d, e, both scored 0
    #   (d,e) votes 2/2/1: q = 0.5 (excluded from accuracy), p = 0.5
    # accuracy = 2/3; the bootstrap draws {A,A},{A,B},{B,A},{B,B}: {B,B} has no decisive pair and is dropped,
    # the others all give 2/3 -> CI [2/3, 2/3]
    # human ceiling = mean(0.85, 0.6, 0.7, 0.5) = 0.6625
    # ECE: bin 7 holds p = 0.7311 twice (mean q 0.625), bin 8 p = 0.8808 (q 0.7), bin 5 p = 0.5 (q 0.5):
    #   2/4 * |0.625 - 0.7311| + 1/4 * |0.7 - 0.8808| + 0 = 0.09823
    # BT of A (ties as half votes): W = [[0, 8.5, 7], [1.5, 0, 4], [3, 6, 0]] -> a > c > b, model a > b > c:
    #   2 concordant, 1 discordant pair -> tau_b = 1/3; B is undefined (constant) -> kendall_tau = 1/3
    # majorities in A: a>b, c>b, a>c -> transitive: 0 cyclic of 1 triad
    p = [sig(1), sig(1), sig(2), 0.5]
    votes = [[8, 1, 1], [3, 5, 2], [6, 2, 2], [2, 2, 1]]
    q = [0.85, 0.4, 0.7, 0.5]
    m, table = vote_metrics(p, votes, ["A", "A", "A", "B"], ["a", "b", "a", "d"], ["b", "c", "c", "e"],
                            [2, 1, 2, 0], [1, 0, 0, 0], return_groups=True)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["accuracy_ci"] == pytest.approx([2 / 3, 2 / 3])
    assert m["human_ceiling"] == pytest.approx(0.6625)
    assert m["human_ceiling_decisive"] == pytest.approx((0.85 + 0.6 + 0.7) / 3)
    assert m["brier"] == pytest.approx(np.mean((np.array(p) - q) ** 2))
    assert m["brier"] == pytest.approx(0.0391086, abs=1e-6)
    expected_nll = -np.mean([qi * math.log(pi) + (1 - qi) * math.log(1 - pi) for pi, qi in zip(p, q)])
    assert m["nll"] == pytest.approx(expected_nll)
    assert m["ece"] == pytest.approx(0.5 * (sig(1) - 0.625) + 0.25 * (sig(2) - 0.7))
    assert m["kendall_tau"] == pytest.approx(1 / 3)
    assert m["n_groups_tau"] == 1
    assert m["cyclic_triad_rate"] == 0.0 and m["n_triads"] == 1
    assert (m["n_pairs"], m["n_decisive"], m["n_groups"], m["n_votes"]) == (4, 3, 2, 35)
    a = table.set_index("group").loc["A"]
    assert (a["n_pairs"], a["n_items"]) == (3, 3)
    assert a["accuracy"] == pytest.approx(2 / 3)


def test_model_tie_gets_half_credit_and_q():
    assert vote_fractions([[3, 1, 2]]).tolist() == [4 / 6]
    m = vote_metrics([0.5, 0.9], [[5, 1, 0], [5, 1, 0]], n_resamples=10)
    assert m["accuracy"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least one vote"):
        vote_fractions([[0, 0, 0]])


def test_wins_matrix_ties_are_half_votes_and_bt_matches_choix():
    import choix

    w = wins_matrix([0, 1, 0], [1, 2, 2], [[4, 0, 2], [1, 3, 0], [0, 0, 5]], 3)
    assert w.tolist() == [[0, 5, 2.5], [1, 0, 1], [2.5, 3, 0]]
    params = fit_bradley_terry(w)
    direct = choix.ilsr_pairwise_dense(w, alpha=0.01)
    assert params == pytest.approx(direct - direct.mean())
    # a pair with only tie votes gets equal strengths
    assert np.ptp(fit_bradley_terry(wins_matrix([0], [1], [[0, 0, 4]], 2))) == pytest.approx(0, abs=1e-9)


def test_kendall_tau_b_matches_scipy_and_handles_ties():
    from scipy.stats import kendalltau

    x, y = [1, 2, 2, 4], [1, 3, 2, 4]
    assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert math.isnan(kendall_tau_b([1, 1], [1, 2]))
    assert math.isnan(kendall_tau_b([1], [1]))


def test_cyclic_triads_by_hand():
    # items 0..3; majorities 0>1, 1>2, 2>0 (a cycle), 3 loses to everyone; pair (1,3) tied 2-2
    # triads: (0,1,2) cyclic; (0,1,3): 1~3 tied -> not a cycle; (0,2,3), (1,2,3): 3 loses -> not cycles
    w = np.zeros((4, 4))
    w[0, 1], w[1, 0] = 6, 4
    w[1, 2], w[2, 1] = 6, 4
    w[2, 0], w[0, 2] = 6, 4
    w[0, 3], w[2, 3] = 5, 5
    w[1, 3], w[3, 1] = 2, 2
    assert cyclic_triads(w) == (1, 4)
    w[1, 3] = w[3, 1] = 0  # pair (1,3) never compared -> triads (0,1,3) and (1,2,3) are not eligible
    assert cyclic_triads(w) == (1, 2)
