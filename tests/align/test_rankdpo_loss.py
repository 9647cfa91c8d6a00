"""RankDPO loss (arXiv 2410.18013, Eqs. 5-7) against a hand-computed 3-item list, and its relation to DPO."""
import math

import pytest
import torch

from imgpref.align.losses import diffusion_dpo_loss, rankdpo_loss


def t64(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_rankdpo_three_items_by_hand():
    # gains (win rates) [0.5, 1.0, 0.0] -> ranks tau = [2, 1, 3]
    # G = 2^gain - 1 = [sqrt(2) - 1, 1, 0] = [0.41421356237309515, 1, 0]
    # 1 / D(tau) = 1 / log(1 + tau) = [1/log 3, 1/log 2, 1/log 4] = [0.9102392266268373, 1.4426950408889634,
    #                                                                0.7213475204444817]
    # pairs (better over worse): (1, 0), (1, 2), (0, 2)
    #   Delta_10 = (1 - 0.41421356) * (1.44269504 - 0.91023923) = 0.3119053946303437
    #   Delta_12 = 1 * (1.44269504 - 0.72134752)                 = 0.7213475204444817
    #   Delta_02 = 0.41421356 * (0.91023923 - 0.72134752)         = 0.07824150652052553
    # s = model - ref = [0.0, -0.1, 0.2]; beta = 10 -> -beta (s_i - s_j): (1,0) 1, (1,2) 3, (0,2) 2
    #   -log sigmoid(z) = log(1 + e^-z): 0.31326168751822286, 0.04858735157374206, 0.1269280110429725
    # loss = 0.31190539 * 0.31326169 + 0.72134752 * 0.04858735 + 0.07824151 * 0.12692801 = 0.1426874146542779
    loss, st = rankdpo_loss(t64([0.30, 0.20, 0.50]), t64([0.30, 0.30, 0.30]), t64([0.5, 1.0, 0.0]), beta=10.0)
    assert loss.item() == pytest.approx(0.1426874146542779, rel=1e-12)
    assert st["implicit_acc"].item() == 1.0  # the model orders all three pairs correctly
    assert st["pairs_per_list"].item() == 3.0


def test_rankdpo_mean_over_lists_and_padding_ignored():
    one, _ = rankdpo_loss(t64([0.30, 0.20, 0.50]), t64([0.30, 0.30, 0.30]), t64([0.5, 1.0, 0.0]), beta=10.0)
    # a second list: 2 valid items + 1 padding item (garbage values must not count)
    # gains [0, 1] -> tau [2, 1]; Delta = 1 * (1/log 2 - 1/log 3) = 0.5324558142621261
    # s = [0.1, 0.0]; z = -10 * (0.0 - 0.1) = 1 -> 0.31326168751822286 * 0.5324558142621261
    second = 0.5324558142621261 * 0.31326168751822286
    loss, st = rankdpo_loss(
        t64([0.30, 0.20, 0.50], [0.4, 0.3, 99.0]), t64([0.30, 0.30, 0.30], [0.3, 0.3, -5.0]),
        t64([0.5, 1.0, 0.0], [0.0, 1.0, 7.0]), beta=10.0,
        valid=torch.tensor([[True, True, True], [True, True, False]]),
    )
    assert loss.item() == pytest.approx((one.item() + second) / 2, rel=1e-12)
    assert st["pairs_per_list"].item() == 2.0  # (3 + 1) / 2


def test_rankdpo_k2_is_dpo_times_constant():
    # K = 2: Delta = |G_w - G_l| (1/log 2 - 1/log 3); with gains 1 / 0 Delta = 1/log 2 - 1/log 3.
    # RankDPO's beta has no 0.5 factor, so it equals Diffusion-DPO with beta_dpo = 2 beta, times Delta.
    mw, ml, rw, rl = t64(0.11, 0.3), t64(0.12, 0.2), t64(0.115, 0.25), t64(0.118, 0.22)
    rank, _ = rankdpo_loss(torch.stack([mw, ml], 1), torch.stack([rw, rl], 1), t64([1.0, 0.0], [1.0, 0.0]), beta=50.0)
    dpo, _ = diffusion_dpo_loss(mw, ml, rw, rl, beta=100.0)
    assert rank.item() == pytest.approx(dpo.item() * (1 / math.log(2) - 1 / math.log(3)), rel=1e-12)


def test_rankdpo_equal_gains_give_no_pair_and_grads_flow():
    m = torch.tensor([[0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    loss, st = rankdpo_loss(m, t64([0.3, 0.3]), t64([0.5, 0.5]), beta=10.0)
    assert loss.item() == 0.0 and st["pairs_per_list"].item() == 0.0
    m2 = torch.tensor([[0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    loss2, _ = rankdpo_loss(m2, t64([0.3, 0.3]), t64([1.0, 0.0]), beta=10.0)
    loss2.backward()
    # lowering the better item's error lowers the loss: d loss / d m_0 > 0, d loss / d m_1 < 0
    assert m2.grad[0, 0] > 0 > m2.grad[0, 1]


def test_rankdpo_shape_error():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        rankdpo_loss(t64(0.1, 0.2), t64(0.1, 0.2), t64(1.0, 0.0))
