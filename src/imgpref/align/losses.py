"""Diffusion preference losses as pure tensor functions (REFERENCE.md, "Diffusion alignment").

Inputs are per-sample denoising MSEs `L = mean((pred(x_t, t) - target)^2)` over C, H, W, where the two images of
a pair share one timestep and one noise. No Lightning here; the module only wires data into these.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per sample: [B, ...] x [B, ...] -> [B], in float32 (bf16/fp16 predictions upcast)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    diff = pred.float() - target.float()
    return diff.pow(2).reshape(diff.shape[0], -1).mean(dim=1)


def diffusion_target(scheduler, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """The regression target the UNet is trained on, from `scheduler.config.prediction_type`.

    epsilon -> the noise; v_prediction -> v = sqrt(a_t) * noise - sqrt(1 - a_t) * latents
    (`scheduler.get_velocity`); sample -> the clean latents.
    """
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"unsupported scheduler prediction_type {kind!r}; expected one of {_PREDICTION_TYPES}")


def _weighted_mean(x: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return x.mean()
    weight = weight.to(x.dtype)
    return (x * weight).sum() / weight.sum().clamp_min(torch.finfo(x.dtype).tiny)


def diffusion_dpo_loss(
    model_mse_w: Tensor,
    model_mse_l: Tensor,
    ref_mse_w: Tensor,
    ref_mse_l: Tensor,
    beta: float = 5000.0,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Diffusion-DPO (Wallace et al.), the original form with the 0.5 factor.

    inside = -0.5 * beta * ((L_w - L_l) - (Lref_w - Lref_l));  loss = mean(-logsigmoid(inside)).
    `weight` ([B], optional) gives a weighted mean (e.g. 0.5 for each orientation of a kept tie).
    Stats (detached): implicit_acc = share of pairs with inside > 0; reward_w / reward_l = mean implicit rewards
    -0.5 * beta * (L - Lref); reward_margin = mean(inside); model_diff / ref_diff = mean(L_w - L_l) per model.
    """
    model_diff = model_mse_w - model_mse_l
    ref_diff = (ref_mse_w - ref_mse_l).detach()
    inside = -0.5 * beta * (model_diff - ref_diff)
    loss = _weighted_mean(-F.logsigmoid(inside), weight)
    with torch.no_grad():
        stats = {
            "implicit_acc": (inside > 0).float().mean(),
            "reward_w": (-0.5 * beta * (model_mse_w - ref_mse_w)).mean(),
            "reward_l": (-0.5 * beta * (model_mse_l - ref_mse_l)).mean(),
            "reward_margin": inside.mean(),
            "model_diff": model_diff.mean(),
            "ref_diff": ref_diff.mean(),
            "mse_w": model_mse_w.mean(),
            "mse_l": model_mse_l.mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


_MAPO_SERIES_BELOW = 1e-4


def mapo_f(x: Tensor, s: float = 0.5) -> Tensor:
    """f(x) = z / (exp(z) - 1) with z = s x, computed in float64 with finite values and gradients everywhere.

    Three branches, each evaluated on a placeholder outside its range so that `torch.where` never multiplies a
    zero by an inf/NaN gradient of the unused branch:
    - |z| < 1e-4: the series 1 - z/2 + z^2/12 (next term z^4/720 < 1e-19); the closed forms lose digits to
      cancellation in their gradients there;
    - z > 0: z e^-z / (-expm1(-z)), which underflows gracefully to 0 (z / expm1(z) overflows above z ~ 709 and
      its gradient becomes 0 * inf = NaN);
    - z < 0: z / expm1(z) (expm1 lies in (-1, 0) there, no overflow)."""
    z = s * x.double()
    small = z.abs() < _MAPO_SERIES_BELOW
    pos = (z > 0) & ~small
    neg = (z < 0) & ~small
    zs = torch.where(small, z, torch.zeros_like(z))
    zp = torch.where(pos, z, torch.ones_like(z))
    zn = torch.where(neg, z, -torch.ones_like(z))
    series = 1.0 - 0.5 * zs + zs * zs / 12.0
    f_pos = zp * torch.exp(-zp) / -torch.expm1(-zp)
    f_neg = zn / torch.expm1(zn)
    return torch.where(small, series, torch.where(pos, f_pos, f_neg))


def mapo_f_naive(x: Tensor, s: float = 0.5) -> Tensor:
    """The naive float32 evaluation of f, kept only to document (and test) why `mapo_f` exists."""
    x32 = x.float()
    return s * x32 / (torch.exp(s * x32) - 1)


def mapo_loss(
    mse_w: Tensor,
    mse_l: Tensor,
    beta: float = 0.1,
    s: float = 0.5,
    T: int = 1000,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """MaPO (reference-free): loss = mean(L_w) - beta * mean(logsigmoid(T * (f(L_w) - f(L_l)))).

    f as in `mapo_f`; the margin T * (f(L_w) - f(L_l)) is formed in float64 (T magnifies rounding), the loss is
    returned in the dtype of `mse_w`. Stats: implicit_acc = share of margins > 0, reward_margin = mean margin.
    """
    margin = T * (mapo_f(mse_w, s) - mapo_f(mse_l, s))
    ratio_term = F.logsigmoid(margin)
    sft = _weighted_mean(mse_w.double(), weight)
    orpo = _weighted_mean(ratio_term, weight)
    loss = (sft - beta * orpo).to(mse_w.dtype)
    with torch.no_grad():
        stats = {
            "implicit_acc": (margin > 0).float().mean(),
            "reward_margin": margin.mean().float(),
            "ratio_loss": (-orpo).float(),
            "mse_w": mse_w.mean(),
            "mse_l": mse_l.mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


def diffusion_kto_loss(
    model_mse: Tensor,
    ref_mse: Tensor,
    desirable: Tensor,
    beta: float = 5000.0,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Diffusion-KTO (Li et al.) for unpaired samples, with the logistic value function of KTO.

    r = -beta * (L - Lref) (implicit reward); z = max(0, mean(r)) detached (the batch's KL reference point);
    loss_i = 1 - sigmoid(r_i - z) for desirable samples, 1 - sigmoid(z - r_i) for undesirable ones;
    loss = mean(loss_i). `desirable` is a bool [B].
    """
    desirable = desirable.bool()
    reward = -beta * (model_mse - ref_mse.detach())
    z = reward.detach().mean().clamp_min(0.0)
    per = torch.where(desirable, 1 - torch.sigmoid(reward - z), 1 - torch.sigmoid(z - reward))
    loss = _weighted_mean(per, weight)
    with torch.no_grad():
        correct = torch.where(desirable, reward > z, reward < z)
        stats = {"implicit_acc": correct.float().mean(), "reward_mean": reward.mean(), "kl_ref": z}
    return loss, {k: v.detach() for k, v in stats.items()}


def rankdpo_loss(
    model_err: Tensor,
    ref_err: Tensor,
    gains: Tensor,
    beta: float = 5000.0,
    valid: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """RankDPO (Karthik et al., arXiv 2410.18013, Eqs. 5-7) for B lists of K images sharing one noise and timestep.

    Per image s_i = L_theta(x_i) - L_ref(x_i) (denoising error minus the reference's; lower = preferred by the
    model). Target ranks tau (1 = best) sort the gains descending (ties keep list order; they get no pair weight
    anyway). G_i = 2^gain_i - 1, D(tau) = log(1 + tau) (natural log),
    Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|, and per list
        loss = - sum over pairs with gain_i > gain_j of Delta_ij * log sigmoid(-beta * (s_i - s_j)),
    averaged over the lists. beta convention: no 0.5 factor (the paper writes none), so K = 2 is Diffusion-DPO
    (with its 0.5) at beta_DPO = 2 * beta, times the constant Delta_12 = |G_1 - G_2| (1/log 2 - 1/log 3).
    model_err, ref_err, gains: [B, K]; valid: optional bool [B, K] for lists shorter than K (padding is ignored).
    Works for any per-sample error (epsilon, v-prediction or flow-matching velocity MSE).
    """
    if not (model_err.shape == ref_err.shape == gains.shape) or model_err.ndim != 2:
        raise ValueError(f"model_err, ref_err and gains must all be [B, K]; got {tuple(model_err.shape)}, "
                         f"{tuple(ref_err.shape)}, {tuple(gains.shape)}")
    g = gains.double()
    ok = torch.ones_like(g, dtype=torch.bool) if valid is None else valid.bool()
    # Rank among the valid items only: padding sorts last.
    order = torch.argsort(torch.where(ok, -g, torch.full_like(g, float("inf"))), dim=1, stable=True)
    tau = torch.empty_like(g)
    tau.scatter_(1, order, torch.arange(1, g.shape[1] + 1, dtype=g.dtype, device=g.device).expand_as(g).contiguous())
    G = torch.pow(2.0, g) - 1.0
    inv_d = 1.0 / torch.log1p(tau)
    delta = (G[:, :, None] - G[:, None, :]).abs() * (inv_d[:, :, None] - inv_d[:, None, :]).abs()
    above = (g[:, :, None] > g[:, None, :]) & ok[:, :, None] & ok[:, None, :]
    s = model_err - ref_err.detach()
    margin = -beta * (s[:, :, None] - s[:, None, :])  # [B, K, K]: positive when i is preferred over j by the model
    terms = torch.where(above, delta.to(s.dtype) * -F.logsigmoid(margin), torch.zeros_like(margin))
    loss = terms.sum(dim=(1, 2)).mean()
    with torch.no_grad():
        n_pairs = above.sum().clamp_min(1)
        stats = {
            "implicit_acc": ((margin > 0) & above).sum().float() / n_pairs,
            "reward_margin": torch.where(above, margin, torch.zeros_like(margin)).sum() / n_pairs,
            "pairs_per_list": above.sum().float() / g.shape[0],
            "model_err": model_err[ok].mean(),
            "ref_err": ref_err[ok].mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}
