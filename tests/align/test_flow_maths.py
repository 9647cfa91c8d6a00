"""Flow-matching maths (imgpref.align.flow) against hand values and diffusers' own utilities."""
import math

import pytest
import torch

from imgpref.align.flow import (
    flow_errors,
    flux_image_ids,
    flow_loss_weights,
    flow_noisy,
    flow_target,
    pack_latents,
    sample_flow_u,
    sigmas_from_u,
    training_sigmas,
    unpack_latents,
)


def test_noisy_and_target_by_hand():
    x0 = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    eps = torch.tensor([[3.0, -1.0], [3.0, -1.0]])
    sigma = torch.tensor([0.25, 1.0])
    # row 0: 0.75 * [1, 2] + 0.25 * [3, -1] = [1.5, 1.25]; row 1 (sigma 1): pure noise
    torch.testing.assert_close(flow_noisy(x0, eps, sigma), torch.tensor([[1.5, 1.25], [3.0, -1.0]]))
    torch.testing.assert_close(flow_target(x0, eps), torch.tensor([[2.0, -3.0], [2.0, -3.0]]))


def test_errors_plain_preconditioned_and_weighted_by_hand():
    x0 = torch.tensor([[1.0, 2.0]])
    eps = torch.tensor([[3.0, -1.0]])
    pred = torch.tensor([[1.0, -1.0]])  # v = [2, -3] -> diff [-1, 2] -> mean square 2.5
    s = torch.tensor([0.5])
    assert flow_errors(pred, x0, eps, s).item() == pytest.approx(2.5)
    # precondition_outputs: (x_t - sigma pred) - x0 = sigma (v - pred) -> sigma^2 * 2.5 = 0.625
    assert flow_errors(pred, x0, eps, s, precondition_outputs=True).item() == pytest.approx(0.625)
    # sigma_sqrt weights 1 / sigma^2 = 4 -> 10; cosmap 2 / (pi (1 - 2 s + 2 s^2)) = 4 / pi at s = 0.5
    assert flow_errors(pred, x0, eps, s, loss_weighting="sigma_sqrt").item() == pytest.approx(10.0)
    assert flow_errors(pred, x0, eps, s, loss_weighting="cosmap").item() == pytest.approx(2.5 * 4 / math.pi)
    assert flow_loss_weights("none", torch.tensor([0.3, 0.9])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="loss_weighting"):
        flow_loss_weights("sqrt", s)


def test_sigma_sampling_matches_the_density_formulas():
    n = 5
    # uniform: u = rand
    g = torch.Generator().manual_seed(7)
    u = sample_flow_u(n, "uniform", generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(u, torch.rand(n, generator=g))
    # logit_normal: u = sigmoid(N(m, s))
    g = torch.Generator().manual_seed(7)
    u = sample_flow_u(n, "logit_normal", logit_mean=0.3, logit_std=1.5, generator=torch.Generator().manual_seed(7))
    z = torch.normal(mean=0.3, std=1.5, size=(n,), generator=g)
    torch.testing.assert_close(u, 1 / (1 + torch.exp(-z)))
    # mode: u <- 1 - u - scale (cos^2(pi u / 2) - 1 + u)
    g = torch.Generator().manual_seed(7)
    u = sample_flow_u(n, "mode", mode_scale=1.29, generator=torch.Generator().manual_seed(7))
    r = torch.rand(n, generator=g).tolist()
    hand = [1 - x - 1.29 * (math.cos(math.pi * x / 2) ** 2 - 1 + x) for x in r]
    torch.testing.assert_close(u, torch.tensor(hand), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="sigma_sampling"):
        sample_flow_u(2, "lognorm")


def test_sigmas_from_u_index_the_shifted_training_sigmas():
    from diffusers import FlowMatchEulerDiscreteScheduler

    u = torch.tensor([0.0, 0.5, 0.9999])
    # shift 1: sigmas = (1000, 999, ..., 1) / 1000; index floor(u * 1000) = 0, 500, 999
    sig, ts = sigmas_from_u(u, training_sigmas(FlowMatchEulerDiscreteScheduler(shift=1.0)))
    torch.testing.assert_close(sig, torch.tensor([1.0, 0.5, 0.001]))
    torch.testing.assert_close(ts, torch.tensor([1000.0, 500.0, 1.0]))
    # shift 3: sigma' = 3 s / (1 + 2 s); s = 0.5 -> 0.75, s = 0.001 -> 0.003 / 1.002
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sig, ts = sigmas_from_u(u, training_sigmas(sch))
    torch.testing.assert_close(sig, torch.tensor([1.0, 0.75, 0.003 / 1.002]))
    # the same as diffusers' training scripts: timesteps = scheduler.timesteps[(u * N).long()]
    torch.testing.assert_close(ts, sch.timesteps[(u * 1000).long()].float())
    # an index range restricts sigma: [500, 1000) -> only the lower half of the (shift 1) sigmas
    sig, _ = sigmas_from_u(torch.tensor([0.0, 0.9999]), training_sigmas(FlowMatchEulerDiscreteScheduler()), (500, 1000))
    torch.testing.assert_close(sig, torch.tensor([0.5, 0.001]))


def test_flux_packing_and_ids_match_the_pipeline():
    from diffusers import FluxPipeline

    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    packed = pack_latents(x)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(x, 2, 3, 8, 6), rtol=0, atol=0)
    torch.testing.assert_close(unpack_latents(packed, 8, 6), x, rtol=0, atol=0)
    # _unpack_latents takes the pixel size: vae_scale_factor 8 -> 64 x 48 px for 8 x 6 latents
    torch.testing.assert_close(FluxPipeline._unpack_latents(packed, 64, 48, 8), x, rtol=0, atol=0)
    ids = flux_image_ids(8, 6)
    torch.testing.assert_close(ids, FluxPipeline._prepare_latent_image_ids(1, 4, 3, "cpu", torch.float32))
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.zeros(1, 1, 3, 4))
