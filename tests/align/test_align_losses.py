"""Diffusion preference losses against hand-computed values (REFERENCE.md, "Diffusion alignment")."""
import math

import pytest
import torch

from imgpref.align.losses import (
    diffusion_dpo_loss,
    diffusion_kto_loss,
    diffusion_target,
    mapo_f,
    mapo_f_naive,
    mapo_loss,
    per_sample_mse,
)


def t64(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_dpo_hand_computed():
    # beta = 100, so -0.5 * beta = -50.
    # pair 1: model_diff = 0.10 - 0.12 = -0.02, ref_diff = 0.11 - 0.11 = 0 -> inside = -50 * -0.02 = 1.0
    #         -logsigmoid(1) = log(1 + e^-1) = 0.31326168751822286
    # pair 2: model_diff = 0.20 - 0.18 = 0.02, ref_diff = 0.19 - 0.17 = 0.02 -> inside = 0 -> log 2 = 0.6931471805599453
    # loss = (0.31326168751822286 + 0.6931471805599453) / 2 = 0.5032044340390841
    loss, st = diffusion_dpo_loss(t64(0.10, 0.20), t64(0.12, 0.18), t64(0.11, 0.19), t64(0.11, 0.17), beta=100.0)
    assert loss.item() == pytest.approx(0.5032044340390841, rel=1e-12)
    assert st["implicit_acc"].item() == 0.5  # only pair 1 has inside > 0 (inside = 0 is not a win)
    # reward_w = -50 * (L_w - Lref_w): pair 1 -50 * -0.01 = 0.5, pair 2 -50 * 0.01 = -0.5 -> mean 0
    # reward_l = -50 * (L_l - Lref_l): pair 1 -50 * 0.01 = -0.5, pair 2 -50 * 0.01 = -0.5 -> mean -0.5
    assert st["reward_w"].item() == pytest.approx(0.0, abs=1e-12)
    assert st["reward_l"].item() == pytest.approx(-0.5, rel=1e-12)
    assert st["reward_margin"].item() == pytest.approx(0.5, rel=1e-12)  # mean(inside) = (1 + 0) / 2


def test_dpo_default_beta_is_original_5000_with_half():
    # model_diff = 0.1001 - 0.1002 = -1e-4, ref_diff = 0 -> inside = -0.5 * 5000 * -1e-4 = 0.25
    # loss = log(1 + e^-0.25) = 0.5759394198788436
    loss, _ = diffusion_dpo_loss(t64(0.1001), t64(0.1002), t64(0.1), t64(0.1))
    assert loss.item() == pytest.approx(0.5759394198788436, rel=1e-9)


def test_dpo_weights_and_reference_gets_no_gradient():
    lw = t64(0.10, 0.20).requires_grad_()
    rw = t64(0.11, 0.19).requires_grad_()
    # weights (1, 0): only pair 1 counts -> 0.31326168751822286
    loss, _ = diffusion_dpo_loss(lw, t64(0.12, 0.18), rw, t64(0.11, 0.17), beta=100.0, weight=t64(1.0, 0.0))
    assert loss.item() == pytest.approx(0.31326168751822286, rel=1e-12)
    loss.backward()
    assert rw.grad is None and lw.grad is not None
    # d/dLw of -logsigmoid(-50 (Lw - ...)) = 50 * sigmoid(-inside) = 50 * sigmoid(-1) = 13.447071068499756
    assert lw.grad[0].item() == pytest.approx(50 / (1 + math.e), rel=1e-9)


def test_mapo_f_values_and_zero():
    # f(2) with s = 0.5: 1 / (e - 1) = 0.5819767068693265; f(0) = 1 (limit), f'(0) = -s/2
    x = t64(2.0, 0.0).requires_grad_()
    f = mapo_f(x)
    assert f[0].item() == pytest.approx(0.5819767068693265, rel=1e-12)
    assert f[1].item() == 1.0
    f.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].item() == pytest.approx(-0.25)


def test_mapo_hand_computed():
    # L_w = 0, L_l = 2, s = 0.5, T = 1, beta = 0.1:
    # margin = f(0) - f(2) = 1 - 0.5819767068693265 = 0.41802329313067355
    # logsigmoid(margin) = -log(1 + e^-0.41802329313067355) = -0.5058212587649029
    # loss = mean(L_w) - 0.1 * -0.5058212587649029 = 0 + 0.050582125876490296
    loss, st = mapo_loss(t64(0.0), t64(2.0), beta=0.1, s=0.5, T=1)
    assert loss.item() == pytest.approx(0.050582125876490296, rel=1e-12)
    assert st["implicit_acc"].item() == 1.0
    assert st["reward_margin"].item() == pytest.approx(0.41802329313067355, rel=1e-6)
    # With T = 1000 the margin is 418 and logsigmoid ~ 0, so loss ~ mean(L_w) = (0.3 + 0.5) / 2 = 0.4
    loss, _ = mapo_loss(t64(0.3, 0.5), t64(2.3, 2.5))
    assert loss.item() == pytest.approx(0.4, abs=1e-12)


def test_mapo_float32_naive_margin_flips_sign_but_stable_one_does_not():
    # Realistic per-sample MSEs of 1e-3..1e-2 with winner/loser differing by up to 1e-3 relative.
    g = torch.Generator().manual_seed(0)
    lw = 10 ** (torch.rand(2000, generator=g, dtype=torch.float64) - 3)
    ll = lw * (1 + 1e-3 * (2 * torch.rand(2000, generator=g, dtype=torch.float64) - 1))
    lw32, ll32 = lw.float(), ll.float()
    # Reference from the series f(x) = 1 - sx/2 + (sx)^2/12 - (sx)^4/720 in float64 on the same float32 inputs.
    def series(x):
        sx = 0.5 * x.double()
        return 1 - sx / 2 + sx**2 / 12 - sx**4 / 720

    ref_sign = torch.sign(series(lw32) - series(ll32))
    stable_sign = torch.sign(mapo_f(lw32) - mapo_f(ll32))
    naive_sign = torch.sign(mapo_f_naive(lw32) - mapo_f_naive(ll32))
    assert (stable_sign == ref_sign).all()
    assert (naive_sign != ref_sign).float().mean() > 0.2  # rounding dominates the naive margin
    assert torch.isnan(mapo_f_naive(torch.zeros(1))).all()
    loss, _ = mapo_loss(torch.zeros(3), torch.zeros(3))
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    # L_w = L_l = 0 -> loss = 0 - 0.1 * logsigmoid(0) = 0.1 * log 2
    assert loss.item() == pytest.approx(0.1 * math.log(2), rel=1e-6)


def test_kto_hand_computed():
    # beta = 100: rewards r = -100 * (L - Lref) = [-100 * -0.01, -100 * 0.01] = [1, -1]; mean 0 -> z = max(0, 0) = 0
    # desirable [True, False]: loss_1 = 1 - sigmoid(1 - 0); loss_2 = 1 - sigmoid(0 - (-1)) = 1 - sigmoid(1)
    # mean = 1 - sigmoid(1) = 0.2689414213699951
    loss, st = diffusion_kto_loss(t64(0.10, 0.12), t64(0.11, 0.11), torch.tensor([True, False]), beta=100.0)
    assert loss.item() == pytest.approx(0.2689414213699951, rel=1e-12)
    assert st["implicit_acc"].item() == 1.0


def test_per_sample_mse_and_targets():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    # sample 1: mean(1,1,1,1) = 1; sample 2: mean(4,0,0,0) = 1
    assert per_sample_mse(pred, target).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="shapes differ"):
        per_sample_mse(pred, target[:1])
    from diffusers import DDPMScheduler

    lat, noise, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([10, 900])
    eps = DDPMScheduler(prediction_type="epsilon")
    assert torch.equal(diffusion_target(eps, lat, noise, t), noise)
    vp = DDPMScheduler(prediction_type="v_prediction")
    a = vp.alphas_cumprod[t].view(-1, 1, 1, 1)
    # v = sqrt(a_t) * noise - sqrt(1 - a_t) * x0
    torch.testing.assert_close(diffusion_target(vp, lat, noise, t), a.sqrt() * noise - (1 - a).sqrt() * lat)


def _mapo_reference(z):
    """f(z) = z / (e^z - 1) and f'(z) = (e^z - 1 - z e^z) / (e^z - 1)^2 with 60-digit arithmetic (mpmath),
    independent of the project's branches; f(0) = 1, f'(0) = -1/2 are the limits."""
    import mpmath

    with mpmath.workdps(60):
        z = mpmath.mpf(z)
        if z == 0:
            return 1.0, -0.5
        em1 = mpmath.expm1(z)
        return float(z / em1), float((em1 - z * mpmath.exp(z)) / em1**2)


@pytest.mark.parametrize("s", [0.5, 1.0])
def test_mapo_f_value_and_gradient_match_high_precision(s):
    # near 0 (series below |z| < 1e-4, closed forms just above), moderate values, and far past exp's overflow
    zs = [-60.0, -3.0, -1e-3, -1.5e-4, -9e-5, -3e-6, -1e-9, 0.0, 1e-9, 3e-6, 9e-5, 1.5e-4, 1e-3, 2.0, 40.0,
          700.0, 800.0, 1e4]
    x = torch.tensor([z / s for z in zs], dtype=torch.float64, requires_grad=True)
    f = mapo_f(x, s)
    f.sum().backward()
    assert torch.isfinite(f).all() and torch.isfinite(x.grad).all()
    for k, z in enumerate(zs):
        want_f, want_df = _mapo_reference(z)
        assert f[k].item() == pytest.approx(want_f, rel=1e-14, abs=1e-300), z
        # d f(s x) / dx = s f'(z)
        assert x.grad[k].item() == pytest.approx(s * want_df, rel=1e-12, abs=1e-300), z


def test_mapo_loss_gradient_finite_for_huge_mse():
    # s * MSE = 800 and 1e4 overflowed expm1 in the old form: the loss was right but the gradient NaN, which
    # poisoned every pair of the batch
    mse_w = torch.tensor([1600.0, 2e4, 0.01], dtype=torch.float64, requires_grad=True)
    mse_l = torch.tensor([1700.0, 0.02, 2e4], dtype=torch.float64, requires_grad=True)
    loss, _ = mapo_loss(mse_w, mse_l, beta=0.1, s=0.5, T=1000)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(mse_w.grad).all() and torch.isfinite(mse_l.grad).all()
