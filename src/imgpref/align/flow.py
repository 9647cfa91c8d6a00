"""Flow-matching training maths and the transformer forward for SD3/SD3.5 and FLUX (REFERENCE.md, "Diffusion
alignment"), in diffusers' FlowMatchEulerDiscreteScheduler convention.

- noisy input  x_t = (1 - sigma) x0 + sigma eps  (`flow_noisy`), regression target v = eps - x0 (`flow_target`);
- sigma sampling: u from diffusers' `compute_density_for_timestep_sampling` ("uniform", "logit_normal", "mode"),
  then, as diffusers' SD3/FLUX training scripts do, the index floor(u * N) into the scheduler's training sigmas
  (so the scheduler's `shift` applies); `timestep = sigma * num_train_timesteps`;
- per-sample error: plain MSE on v by default. SD3's `precondition_outputs` (error on x0_hat = x_t - sigma v_hat,
  i.e. sigma^2 |v_hat - v|^2) and the `compute_loss_weighting_for_sd3` weights ("sigma_sqrt", "cosmap") are
  explicit options only (`flow_errors`).

SD3 takes timesteps in [0, 1000]; FLUX takes timesteps / 1000 (= sigma) plus a guidance tensor when its
transformer has `guidance_embeds`, and works on 2x2-packed latents with text and image position ids.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

SIGMA_SAMPLING = ("uniform", "logit_normal", "mode")
LOSS_WEIGHTING = ("none", "sigma_sqrt", "cosmap")
FLOW_KINDS = ("sd3", "flux")


def _bcast(sigma: Tensor, like: Tensor) -> Tensor:
    return sigma.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def flow_noisy(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """x_t = (1 - sigma) x0 + sigma noise, sigma [B] broadcast over the other dimensions."""
    s = _bcast(sigma, x0)
    return (1.0 - s) * x0 + s * noise


def flow_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The velocity target v = noise - x0 (d x_t / d sigma)."""
    return noise - x0


def sample_flow_u(
    batch_size: int,
    scheme: str = "uniform",
    *,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """u in [0, 1) from diffusers' `compute_density_for_timestep_sampling` (the function itself, imported)."""
    if scheme not in SIGMA_SAMPLING:
        raise ValueError(f"sigma_sampling must be one of {list(SIGMA_SAMPLING)}; got {scheme!r}")
    from diffusers.training_utils import compute_density_for_timestep_sampling

    return compute_density_for_timestep_sampling(
        weighting_scheme=scheme, batch_size=int(batch_size), logit_mean=logit_mean, logit_std=logit_std,
        mode_scale=mode_scale, device=device, generator=generator,
    )


def training_sigmas(scheduler: Any) -> Tensor:
    """The scheduler's N training sigmas (descending, shift applied), as a fresh FlowMatchEulerDiscreteScheduler
    built from `scheduler.config` has them before `set_timesteps`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    fresh = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
    return fresh.sigmas[: int(fresh.config.num_train_timesteps)].float().clone()


def sigmas_from_u(u: Tensor, sigmas: Tensor, index_range: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """(sigma, timestep) for u: index lo + floor(u (hi - lo)) into `sigmas` (N training sigmas); timestep = sigma * N.

    With the full range this is diffusers' `indices = (u * N).long(); timesteps = scheduler.timesteps[indices]`.
    """
    n = sigmas.shape[0]
    lo, hi = index_range or (0, n)
    idx = (lo + (u.float() * (hi - lo)).long()).clamp(lo, hi - 1)
    sigma = sigmas.to(u.device)[idx.to(u.device)]
    return sigma, sigma * n


def flow_loss_weights(scheme: str, sigma: Tensor) -> Tensor:
    """Per-sample loss weights from diffusers' `compute_loss_weighting_for_sd3` ("none" -> ones)."""
    if scheme not in LOSS_WEIGHTING:
        raise ValueError(f"loss_weighting must be one of {list(LOSS_WEIGHTING)}; got {scheme!r}")
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    return compute_loss_weighting_for_sd3(scheme, sigmas=sigma.float())


def flow_errors(
    pred: Tensor,
    x0: Tensor,
    noise: Tensor,
    sigma: Tensor,
    *,
    precondition_outputs: bool = False,
    loss_weighting: str = "none",
) -> Tensor:
    """Per-sample errors [B] (float32) of a velocity prediction `pred`.

    Default: mean((pred - (noise - x0))^2). precondition_outputs: mean((x_t - sigma pred - x0)^2)
    (= sigma^2 |pred - v|^2, the SD3 DreamBooth default, off here unless asked). loss_weighting multiplies the
    per-element squared error by `flow_loss_weights(loss_weighting, sigma)` before the mean.
    """
    if pred.shape != x0.shape:
        raise ValueError(f"pred and x0 shapes differ: {tuple(pred.shape)} vs {tuple(x0.shape)}")
    p, x, e = pred.float(), x0.float(), noise.float()
    s = _bcast(sigma.float(), x)
    if precondition_outputs:
        x_t = (1.0 - s) * x + s * e
        diff = (x_t - s * p) - x
    else:
        diff = p - (e - x)
    sq = diff.pow(2)
    if loss_weighting != "none":
        sq = sq * _bcast(flow_loss_weights(loss_weighting, sigma.float()), sq)
    return sq.reshape(sq.shape[0], -1).mean(dim=1)


def flow_kind(pipe_or_transformer: Any) -> str | None:
    """"sd3" / "flux" for flow-matching pipelines or transformers, None for UNet pipelines."""
    t = getattr(pipe_or_transformer, "transformer", pipe_or_transformer)
    name = type(t).__name__
    if name.startswith("SD3Transformer"):
        return "sd3"
    if name.startswith("FluxTransformer"):
        return "flux"
    return None


def pack_latents(latents: Tensor) -> Tensor:
    """FLUX packing: [B, C, h, w] -> [B, (h/2)(w/2), 4C] (2x2 patches), as `FluxPipeline._pack_latents`."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"FLUX latents need even height and width; got {h}x{w}")
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(packed: Tensor, h: int, w: int) -> Tensor:
    """Inverse of `pack_latents`: [B, (h/2)(w/2), 4C] -> [B, C, h, w] (h, w: latent size)."""
    b, n, c4 = packed.shape
    c = c4 // 4
    x = packed.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def flux_image_ids(h: int, w: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """FLUX image position ids [(h/2)(w/2), 3]: (0, row, column) of each packed 2x2 patch (h, w: latent size)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def transformer_velocity(
    transformer: Any, kind: str, noisy: Tensor, timesteps: Tensor, cond: dict[str, Tensor], *, guidance: float = 3.5
) -> Tensor:
    """The transformer's velocity prediction [B, C, h, w] for unpacked noisy latents.

    timesteps: sigma * 1000 ([B]). cond: "encoder_hidden_states" [B, L, D], "pooled_projections" [B, P] and, for
    FLUX, "txt_ids" [L, 3]. FLUX gets packed latents, image ids, timesteps / 1000 and (when the transformer has
    `guidance_embeds`) a guidance tensor filled with `guidance`, exactly as `FluxPipeline.__call__` passes them.
    """
    dev = next(transformer.parameters()).device
    dtype = next(transformer.parameters()).dtype
    mv = lambda x: x.to(device=dev, dtype=dtype)  # noqa: E731
    if kind == "sd3":
        out = transformer(hidden_states=mv(noisy), timestep=timesteps.to(dev), encoder_hidden_states=mv(cond["encoder_hidden_states"]),
                          pooled_projections=mv(cond["pooled_projections"]), return_dict=False)[0]
        return out.float()
    if kind != "flux":
        raise ValueError(f"flow kind must be one of {FLOW_KINDS}; got {kind!r}")
    b, _, h, w = noisy.shape
    g = None
    if getattr(transformer.config, "guidance_embeds", False):
        g = torch.full((b,), float(guidance), device=dev, dtype=torch.float32)
    out = transformer(
        hidden_states=mv(pack_latents(noisy)), timestep=(timesteps / 1000.0).to(dev, dtype), guidance=g,
        pooled_projections=mv(cond["pooled_projections"]), encoder_hidden_states=mv(cond["encoder_hidden_states"]),
        txt_ids=cond["txt_ids"].to(dev, dtype), img_ids=flux_image_ids(h, w, dev, dtype), return_dict=False,
    )[0]
    return unpack_latents(out.float(), h, w)
