"""Preference losses against hand-computed values (arithmetic in the comments)."""
import math

import pytest
import torch

from imgpref.train import losses as L


def t(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_vote_fraction_and_zero_votes():
    # q = (v0 + 0.5 vt) / n: (20 + 0.5*4)/25 = 0.88 ; (0 + 0.5*1)/1 = 0.5
    q = L.vote_fraction(torch.tensor([[20, 1, 4], [0, 0, 1]]))
    assert torch.allclose(q, torch.tensor([0.88, 0.5]))
    with pytest.raises(ValueError, match="0 votes"):
        L.vote_fraction(torch.tensor([[0, 0, 0]]))


def test_bt_hard_hand_values():
    # s0=1, s1=0, image 0 wins: log(1 + e^-1) = 0.31326169
    # s0=1, s1=0, image 1 wins: log(1 + e^1)  = 1.31326169 ; mean = 0.81326169
    assert L.bt_hard(t(1.0), t(0.0), torch.tensor([1])).item() == pytest.approx(0.31326169, abs=1e-7)
    got = L.bt_hard(t(1.0, 1.0), t(0.0, 0.0), torch.tensor([1, 0])).item()
    assert got == pytest.approx(0.81326169, abs=1e-7)


def test_bt_soft_hand_values_and_stability():
    # d = 2, q = 0.75: p = sigmoid(2) = 0.88079708
    # -(0.75 ln 0.88079708 + 0.25 ln 0.11920292) = -(0.75*-0.12692801 + 0.25*-2.12692801) = 0.62692801
    assert L.bt_soft(t(2.0), t(0.0), t(0.75)).item() == pytest.approx(0.62692801, abs=1e-7)
    # q in {0,1} equals bt_hard
    assert L.bt_soft(t(1.0), t(0.0), t(1.0)).item() == pytest.approx(0.31326169, abs=1e-7)
    # no inf for a huge margin: -(0 * ln p + 1 * ln(1-p)) with d = 1000 -> 1000
    assert L.bt_soft(t(1000.0), t(0.0), t(0.0)).item() == pytest.approx(1000.0)
    # a 50/50 pair is minimised at d=0 with value ln 2
    assert L.bt_soft(t(0.0), t(0.0), t(0.5)).item() == pytest.approx(math.log(2))


def test_davidson_hand_values():
    # s0 = ln 2, s1 = 0, nu = 1: weights 2, 1, sqrt(2) -> Z = 3 + 1.41421356 = 4.41421356
    # P = (2/Z, 1/Z, sqrt2/Z) = (0.45308184, 0.22654092, 0.32037724)
    lp = L.davidson_log_probs(t(math.log(2)), t(0.0), 0.0).exp()
    assert torch.allclose(lp, t(0.45308184, 0.22654092, 0.32037724).unsqueeze(0), atol=1e-8)
    # votes (2, 1, 1): NLL per vote = -(2 ln .45308184 + ln .22654092 + ln .32037724)/4
    #                  = (2*0.79168 + 1.48483 + 1.13826)/4 = 1.05161
    expect = -(2 * math.log(0.45308184) + math.log(0.22654092) + math.log(0.32037724)) / 4
    got = L.davidson(t(math.log(2)), t(0.0), t(2, 1, 1).unsqueeze(0), 0.0).item()
    assert got == pytest.approx(expect, abs=1e-7)


def test_davidson_without_ties_approaches_bt():
    # nu -> 0 removes the tie outcome: the model becomes Bradley-Terry
    s0, s1 = t(0.3, -1.2), t(0.0, 0.5)
    votes = t(3, 1, 0, 0, 2, 0).reshape(2, 3)
    dav = L.davidson(s0, s1, votes, -50.0)
    q = L.vote_fraction(votes)
    bt_per_vote = -(votes[:, 0] * torch.nn.functional.logsigmoid(s0 - s1) +
                    votes[:, 1] * torch.nn.functional.logsigmoid(s1 - s0)).sum() / votes.sum()
    assert dav.item() == pytest.approx(bt_per_vote.item(), abs=1e-9)
    assert q.tolist() == [0.75, 0.0]


def test_pickscore_ce_ties_and_offset():
    # tie target (0.5, 0.5) with s0 = s1: CE = ln 2; with the offset it reaches 0
    s0, s1, tgt = t(3.0), t(3.0), t(0.5, 0.5).unsqueeze(0)
    assert L.pickscore_ce(s0, s1, tgt).item() == pytest.approx(math.log(2))
    assert L.pickscore_ce(s0, s1, tgt, tie_offset=True).item() == pytest.approx(0.0, abs=1e-12)
    # the offset shifts the value, not the gradient
    a = t(1.0).requires_grad_()
    L.pickscore_ce(a, t(0.0), tgt).backward()
    g1 = a.grad.clone()
    a.grad = None
    L.pickscore_ce(a, t(0.0), tgt, tie_offset=True).backward()
    assert torch.allclose(g1, a.grad)
    # hard target (1,0), s0=1, s1=0: -log softmax = ln(1+e^-1) = 0.31326169
    assert L.pickscore_ce(t(1.0), t(0.0), t(1.0, 0.0).unsqueeze(0)).item() == pytest.approx(0.31326169, abs=1e-7)


def test_prompt_weights():
    # prompts a, a, b -> 1/2, 1/2, 1
    assert L.prompt_weights(["a", "a", "b"]).tolist() == [0.5, 0.5, 1.0]
    # per-example losses (0.31326169, 1.31326169, 0.31326169) with weights (.5, .5, 1):
    # (0.15663085 + 0.65663085 + 0.31326169) / 2 = 0.56326169
    got = L.pickscore_ce(t(1.0, 0.0, 1.0), t(0.0, 1.0, 0.0), t(1, 0, 1, 0, 1, 0).reshape(3, 2),
                         weights=L.prompt_weights(["a", "a", "b"]).double())
    assert got.item() == pytest.approx(0.56326169, abs=1e-7)


def test_plackett_luce_hand_values():
    # scores (a=2, b=1, c=0), ranking a > b > c:
    # -[ln(e^2/(e^2+e+1)) + ln(e/(e+1)) + 0] = 0.40760596 + 0.31326169 = 0.72086765
    got = L.plackett_luce(t(2.0, 1.0, 0.0), torch.tensor([0, 1, 2])).item()
    assert got == pytest.approx(0.72086765, abs=1e-7)
    # with two items, Plackett-Luce equals BT hard
    assert L.plackett_luce(t(0.4, 1.1), torch.tensor([1, 0])).item() == pytest.approx(
        L.bt_hard(t(1.1), t(0.4), torch.tensor([1])).item())


def test_plackett_luce_batch_padding():
    scores = t(2.0, 1.0, 0.0, 0.4, 1.1, 9.0).reshape(2, 3)
    order = torch.tensor([[0, 1, 2], [1, 0, 2]])
    mask = torch.tensor([[True, True, True], [True, True, False]])  # group 2 has two real items
    got = L.plackett_luce_batch(scores, order, mask).item()
    # group 2: item 1 (score 1.1) placed before item 0 (0.4): -log(e^1.1 / (e^1.1 + e^0.4)) = log(1 + e^-0.7)
    expect = (0.72086765 + math.log1p(math.exp(-0.7))) / 2
    assert got == pytest.approx(expect, abs=1e-7)


def test_gpm_antisymmetry_cycles_and_bt_case():
    va, vb = t(1.0, 2.0, 0.5, -1.0), t(0.3, 0.7, 2.0, 1.0)
    # s(a,b) = 1*0.7 - 2*0.3 + 0.5*1 - (-1)*2 = 0.1 + 2.5 = 2.6
    assert L.gpm_score(va, vb).item() == pytest.approx(2.6)
    assert L.gpm_score(vb, va).item() == pytest.approx(-2.6)
    # BT is v = (r, 1): s = r_a - r_b, so the GPM loss equals bt_soft
    ra, rb, q = t(0.9), t(-0.2), t(0.7)
    v = lambda r: torch.stack([r, torch.ones_like(r)], -1)  # noqa: E731
    assert L.gpm_loss(v(ra), v(rb), q).item() == pytest.approx(L.bt_soft(ra, rb, q).item())
    # three unit vectors 120 degrees apart form a cycle a > b > c > a
    ang = [0, 2 * math.pi / 3, 4 * math.pi / 3]
    a, b, c = (t(math.cos(x), math.sin(x)) for x in ang)
    assert L.gpm_score(a, b) > 0 and L.gpm_score(b, c) > 0 and L.gpm_score(c, a) > 0
    with pytest.raises(ValueError, match="even"):
        L.gpm_score(t(1.0, 2.0, 3.0), t(1.0, 2.0, 3.0))


def test_vote_weights_and_adapters():
    votes = torch.tensor([[25, 0, 0], [10, 10, 5], [5, 15, 5]])
    # |2q-1|: 1, 0, |2*0.3-1| = 0.4
    assert torch.allclose(L.vote_weights(votes).float(), torch.tensor([1.0, 0.0, 0.4]))
    s0, s1 = t(1.0, 0.0, 0.0), t(0.0, 0.0, 1.0)
    # bt_hard adapter drops the 50/50 pair: mean(ln(1+e^-1), ln(1+e^-1)) = 0.31326169
    assert L.get_loss("bt_hard")(s0, s1, votes).item() == pytest.approx(0.31326169, abs=1e-7)
    # bt_soft adapter uses q = (1, 0.5, 0.3)
    assert L.get_loss("bt_soft")(s0, s1, votes).item() == pytest.approx(
        L.bt_soft(s0, s1, t(1.0, 0.5, 0.3)).item())
    with pytest.raises(ValueError, match="unknown loss"):
        L.get_loss("nope")
