"""DiffusionPreferenceModule wiring: shared noise/timestep, references, losses equal to a direct computation."""
import math

import pytest
import torch

from imgpref.align.losses import diffusion_target, mapo_loss, per_sample_mse
from imgpref.align.module import DiffusionPreferenceModule
from imgpref.align.tiny import build_tiny_pipeline

torch.set_num_threads(2)


def _batch(seed=0, same=False, b=2):
    g = torch.Generator().manual_seed(seed)
    pw = torch.rand(b, 3, 32, 32, generator=g) * 2 - 1
    pl = pw.clone() if same else torch.rand(b, 3, 32, 32, generator=g) * 2 - 1
    return {"pixels_w": pw, "pixels_l": pl, "prompt": ["a red cat", "a blue dog"][:b], "weight": torch.ones(b)}


def _perturb_lora(m, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in m.trainable_named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_identical_images_give_log2_because_noise_and_timestep_are_shared():
    # If winner and loser got different noise or timesteps, L_w != L_l even for the same image.
    m = DiffusionPreferenceModule(method="dpo")
    _perturb_lora(m)
    lat = torch.randn(2, 4, 16, 16)  # cached latents (the VAE would sample each image's latent independently)
    batch = {"latents_w": lat, "latents_l": lat.clone(), "prompt": ["a red cat", "a blue dog"]}
    loss, st = m.pair_losses(batch, generator=torch.Generator().manual_seed(0))
    assert st["model_diff"].item() == 0.0 and st["ref_diff"].item() == 0.0
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_adapters_off_reference_equals_copy_reference_and_base_unet():
    batch = _batch()
    losses = {}
    for ref in ("adapters_off", "copy"):
        m = DiffusionPreferenceModule(method="dpo", reference=ref)
        _perturb_lora(m)  # same perturbation: both models are the same LoRA model
        losses[ref] = m.pair_losses(batch, generator=torch.Generator().manual_seed(0))
    # beta = 5000 magnifies float32 rounding of MSEs ~1 (2500 * 1.2e-7 = 3e-4) between the two code paths.
    torch.testing.assert_close(losses["adapters_off"][0], losses["copy"][0], rtol=2e-3, atol=1e-4)
    assert abs(losses["copy"][1]["ref_diff"] - losses["adapters_off"][1]["ref_diff"]) < 1e-6
    assert losses["copy"][1]["reward_margin"].abs() > 0  # the perturbed LoRA differs from its reference
    # The reference with adapters disabled is exactly the untouched base UNet.
    m = DiffusionPreferenceModule(method="dpo")
    _perturb_lora(m)
    base = build_tiny_pipeline(seed=0).unet
    x, t, e = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad(), m._adapters_disabled():
        torch.testing.assert_close(m.unet(x, t, e).sample, base(x, t, e).sample)
    with torch.no_grad():
        on = m.unet(x, t, e).sample
        assert (on - base(x, t, e).sample).abs().max() > 1e-3  # adapters back on: the perturbed LoRA acts again
    # ... also when the reference pass raises (a `finally`, not a plain re-enable after the block)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), m._adapters_disabled():
        raise RuntimeError("boom")
    with torch.no_grad():
        torch.testing.assert_close(m.unet(x, t, e).sample, on)


def test_mapo_step_equals_direct_computation():
    m = DiffusionPreferenceModule(method="mapo", beta=0.1)
    _perturb_lora(m)
    batch = _batch()
    loss, _ = m.pair_losses(batch, generator=torch.Generator().manual_seed(5))
    # Replay the same random draws by hand: latents (winner, loser), then one noise and one timestep per pair.
    g = torch.Generator().manual_seed(5)
    lw, ll = m.encode_images(batch["pixels_w"], g), m.encode_images(batch["pixels_l"], g)
    noise = torch.randn(lw.shape, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    emb = m.pipe.encode_prompt(batch["prompt"], "cpu", 1, False)[0]
    sch = m.noise_scheduler
    mse = []
    for lat in (lw, ll):
        pred = m.unet(sch.add_noise(lat, noise, t), t, emb).sample
        mse.append(per_sample_mse(pred, diffusion_target(sch, lat, noise, t)))
    expected, _ = mapo_loss(mse[0], mse[1], beta=0.1, s=0.5, T=1000)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_full_finetune_trains_unet_and_keeps_reference_frozen():
    m = DiffusionPreferenceModule(method="dpo", finetune="full", reference="copy", lr=1e-2)
    ref_before = {k: v.clone() for k, v in m._ref[0].state_dict().items()}
    unet_before = {k: v.clone() for k, v in m.unet.state_dict().items()}
    opt = m.configure_optimizers()["optimizer"]
    loss, _ = m.pair_losses(_batch())
    loss.backward()
    opt.step()
    assert all(torch.equal(v, ref_before[k]) for k, v in m._ref[0].state_dict().items())
    assert any(not torch.equal(v, unet_before[k]) for k, v in m.unet.state_dict().items())
    assert "_ref" not in dict(m.named_children())  # never registered, so never checkpointed or double-counted


def test_lora_trains_only_adapters_and_dpo_loss_goes_down():
    m = DiffusionPreferenceModule(method="dpo", lr=3e-3, beta=5000.0)
    names = [n for n, _ in m.trainable_named_parameters()]
    assert names and all("lora" in n for n in names)
    opt = m.configure_optimizers()["optimizer"]
    batch = _batch()
    first = None
    for step in range(4):
        loss, st = m.pair_losses(batch, generator=torch.Generator().manual_seed(0))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first and st["implicit_acc"].item() == 1.0


def test_kto_and_sdxl_time_ids_reach_the_unet():
    m = DiffusionPreferenceModule(method="kto")
    loss, st = m.pair_losses(_batch(), generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.5, abs=1e-4)  # LoRA starts as the reference: r = 0, z = 0 -> 1 - sigmoid(0)
    mx = DiffusionPreferenceModule(method="mapo", pipeline="tiny-sdxl")
    assert mx.sdxl
    lat = torch.randn(2, 4, 16, 16)
    batch = {"latents_w": lat, "latents_l": lat.clone(), "prompt": ["a red cat", "a blue dog"]}
    batch["time_ids_w"] = torch.tensor([[64.0, 48.0, 0.0, 8.0, 32.0, 32.0]] * 2)
    batch["time_ids_l"] = torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2)
    _, st = mx.pair_losses(batch, generator=torch.Generator().manual_seed(0))
    assert st["mse_w"].item() != st["mse_l"].item()  # same image and noise: only the time ids differ
    with pytest.raises(ValueError, match="time_ids"):
        mx.pair_losses(_batch())


def test_options_are_validated():
    with pytest.raises(ValueError, match="adapters_off"):
        DiffusionPreferenceModule(finetune="full", reference="adapters_off")
    with pytest.raises(ValueError, match="method"):
        DiffusionPreferenceModule(method="ppo")
    with pytest.raises(ValueError, match="prompt_dropout"):
        DiffusionPreferenceModule(prompt_dropout=1.5)
    m = DiffusionPreferenceModule(method="mapo", prompt_dropout=0.0)
    assert m.hparams.prompt_dropout == 0.0 and m.reference == "none" and not m._ref


def test_gradient_checkpointing_still_trains_lora():
    # A classic failure: re-entrant checkpointing with no input requiring grad silently gives LoRA no gradient.
    m = DiffusionPreferenceModule(method="mapo", gradient_checkpointing=True)
    assert m.unet.is_gradient_checkpointing
    loss, _ = m.pair_losses(_batch(b=1))
    loss.backward()
    grads = [p.grad for _, p in m.trainable_named_parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
