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


def mapo_f(x: Tensor, s: float = 0.5) -> Tensor:
    """f(x) = s x / (exp(s x) - 1), computed stably in float64 with expm1 and f(0) = 1.

    Naively in float32, exp(s x) - 1 loses most digits for small x (and is 0/0 at x = 0)."""
    x64 = x.double()
    sx = s * x64
    small = sx.abs() < 1e-8
    safe = torch.where(small, torch.ones_like(sx), sx)
    # Two-term series where sx ~ 0 so the value and the gradient stay finite at exactly 0.
    return torch.where(small, 1.0 - 0.5 * sx, safe / torch.expm1(safe))


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
