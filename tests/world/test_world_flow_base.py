"""The world's flow-matching (SD3-style) base: built deterministically, samples 32 px images, reloads from
save_pretrained, its collapsed-T5 training attention equals diffusers' own on the full prompt embeddings, the
VAE shift/scale standardise the latents, and a few training steps lower the flow loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def world():
    from imgpref.world.store import load_world

    torch.manual_seed(0)
    return load_world()


@pytest.fixture(scope="module")
def quick_base(world):
    from imgpref.world.flow_base import FlowPretrainSizes, pretrain_flow_world

    return pretrain_flow_world(world, seed=0, sizes=FlowPretrainSizes.quick())


def test_quick_base_is_an_sd3_pipeline_and_deterministic(world, quick_base):
    from imgpref.world.flow_base import FlowPretrainSizes, pretrain_flow_world

    pipe, report = quick_base
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    assert pipe.text_encoder_3 is None and type(pipe.text_encoder).__name__ == "CLIPTextModelWithProjection"
    cfg, vae_cfg = pipe.transformer.config, world[0].vae.config
    assert cfg.in_channels == vae_cfg.latent_channels
    assert cfg.sample_size == 32 // 2 ** (len(vae_cfg.block_out_channels) - 1)  # 32 px scenes, the VAE's latent size
    again, _ = pretrain_flow_world(world, seed=0, sizes=FlowPretrainSizes.quick())
    a, b = pipe.transformer.state_dict(), again.transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other, _ = pretrain_flow_world(world, seed=1, sizes=FlowPretrainSizes.quick())
    assert not torch.equal(a["proj_out.weight"], other.transformer.state_dict()["proj_out.weight"])
    assert report.metrics["flow_loss_last"] > 0


def test_samples_have_the_world_shape_and_reload_identically(quick_base, tmp_path):
    from imgpref.align.generate import generate_images
    from imgpref.world.flow_base import load_flow_pipeline, save_flow_world

    pipe, report = quick_base
    run = dict(num_inference_steps=2, guidance_scale=3.0, batch_size=4)
    gens = generate_images(pipe, ["two red circles on a blue background", "a green square on a white background"],
                           2, base_seed=5, **run)
    c, h = pipe.transformer.config.in_channels, pipe.transformer.config.sample_size
    assert tuple(gens.images.shape) == (4, 3, 32, 32) and tuple(gens.latents.shape) == (4, c, h, h)
    assert float(gens.images.min()) >= 0.0 and float(gens.images.max()) <= 1.0
    save_flow_world(pipe, tmp_path / "flow", report)
    again = generate_images(load_flow_pipeline(tmp_path / "flow"), ["two red circles on a blue background"], 1,
                            base_seed=5, **run)
    assert torch.allclose(again.images[0], gens.images[0], atol=1e-5)


def test_load_flow_pipeline_names_a_missing_folder(tmp_path):
    from imgpref.world.flow_base import load_flow_pipeline

    with pytest.raises(FileNotFoundError, match="pretrain-flow"):
        load_flow_pipeline(tmp_path / "nothing")


def test_collapsed_t5_attention_equals_diffusers_on_the_full_embeddings(quick_base):
    from imgpref.world.flow_base import caption_conditioning, collapsed_t5, t5_slot_length

    pipe, _ = quick_base
    tr = pipe.transformer
    caps = ["three yellow triangles on a black background", ""]
    full = caption_conditioning(pipe, caps)  # what sampling feeds: 16 CLIP rows + 256 zero T5 rows
    short = caption_conditioning(pipe, caps, max_sequence_length=1)
    assert full["encoder_hidden_states"].shape[1] == short["encoder_hidden_states"].shape[1] - 1 + t5_slot_length()
    g, cfg = torch.Generator().manual_seed(0), tr.config
    x = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    t = torch.tensor([250.0, 875.0])
    with torch.no_grad():
        ref = tr(hidden_states=x, timestep=t, **full).sample  # diffusers' JointAttnProcessor2_0
        with collapsed_t5(tr):
            got = tr(hidden_states=x, timestep=t, **short).sample
        after = tr(hidden_states=x, timestep=t, **full).sample
    assert float(ref.abs().mean()) > 1e-3
    assert torch.allclose(got, ref, atol=1e-5), float((got - ref).abs().max())
    assert torch.equal(after, ref)  # diffusers' processors are back


def test_flow_vae_standardises_latents_and_leaves_the_world_vae_alone(world):
    from imgpref.world.flow_base import flow_vae

    vae = world[0].vae
    before = dict(vae.config)
    z = torch.randn(50, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 3.0 + 2.0  # mean 2, std 3
    out = flow_vae(vae, z)
    shift, scale = out.config.shift_factor, out.config.scaling_factor
    assert shift == pytest.approx(float(z.mean()), abs=1e-6)
    assert scale == pytest.approx(1.0 / float((z - z.mean()).std()), rel=1e-5)
    scaled = (z - shift) * scale
    assert float(scaled.mean()) == pytest.approx(0.0, abs=1e-5) and float(scaled.std()) == pytest.approx(1.0, abs=1e-5)
    assert dict(vae.config) == before and out is not vae


@pytest.mark.slow  # ~25 s wall on the shared 2-core machine (about 8 CPU s)
def test_a_few_training_steps_lower_the_flow_loss(world):
    from imgpref.world.base_model import encode_latents, vae_pixels
    from imgpref.world.flow_base import (FlowBatchLoss, FlowPretrainSizes, assemble_flow_pipeline, build_transformer,
                                         caption_conditioning, collapsed_t5, flow_vae, text_encoder_with_projection,
                                         transformer_config)
    from imgpref.world.pretrain_modules import fit_stage
    from imgpref.world.scenes import sample_dataset

    world_pipe, clip = world
    images, prompts = sample_dataset(64, 3, size=32)
    raw = encode_latents(world_pipe.vae, vae_pixels(images))
    vae = flow_vae(world_pipe.vae, raw)
    z = (raw - vae.config.shift_factor) * vae.config.scaling_factor
    sizes = FlowPretrainSizes.quick()
    tr = build_transformer(transformer_config(vae, text_encoder_with_projection(clip), sizes), 0)
    pipe = assemble_flow_pipeline(clip, vae, tr)
    captions = sorted(set(prompts)) + [""]
    cap = torch.tensor([captions.index(p) for p in prompts])
    loss = FlowBatchLoss(caption_conditioning(pipe, captions, max_sequence_length=1), len(captions) - 1, 0.0,
                         pipe.scheduler)

    def held_loss() -> float:  # the same noise, sigma and batch before and after
        with torch.no_grad(), collapsed_t5(tr):
            return float(loss(tr, (z, cap), torch.Generator().manual_seed(123))[0])

    before = held_loss()
    with collapsed_t5(tr):
        fit_stage(tr, loss, (z, cap), steps=30, batch_size=16, lr=2e-3, seed=0, warmup=3)
    after = held_loss()
    assert np.isfinite(before) and after < 0.9 * before, (before, after)


def test_fast_sampling_pipeline_samples_the_same_images(quick_base):
    from imgpref.align.generate import generate_images
    from imgpref.world.flow_base import fast_sampling_pipeline

    pipe, _ = quick_base
    fast = fast_sampling_pipeline(pipe)
    run = dict(num_inference_steps=3, guidance_scale=3.0, batch_size=2)
    prompts = ["two red circles on a blue background", "a green square on a white background"]
    ref = generate_images(pipe, prompts, 1, base_seed=7, **run)  # diffusers' attention on 256 zero T5 rows
    got = generate_images(fast, prompts, 1, base_seed=7, **run)
    assert float(ref.images.std()) > 1e-3
    assert torch.allclose(got.latents, ref.latents, atol=1e-4), float((got.latents - ref.latents).abs().max())
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"  # the original keeps its class and processors
    assert type(pipe.transformer.transformer_blocks[0].attn.processor).__name__ != "CollapsedT5Attention"


def test_flow_cache_folder_changes_with_the_training_code_bytes(tmp_path, monkeypatch):
    """The cached flow base is keyed on the bytes of the code that trains it: editing one module (here a stand-in
    added to TRAINING_CODE) must give a new folder, and restoring the bytes gives the old one back."""
    from imgpref.world import flow_base

    module = tmp_path / "fake_world_training_code.py"
    module.write_text("STEPS = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(flow_base, "TRAINING_CODE", flow_base.TRAINING_CODE + ("fake_world_training_code",))
    first = flow_base.flow_cache_dir(0, cache=tmp_path)
    assert flow_base.flow_cache_dir(0, cache=tmp_path) == first
    module.write_text("STEPS = 2\n")
    edited = flow_base.flow_cache_dir(0, cache=tmp_path)
    assert edited != first and edited.name.endswith("-s0") and edited.parent == tmp_path
    module.write_text("STEPS = 1\n")
    assert flow_base.flow_cache_dir(0, cache=tmp_path) == first
    assert flow_base.flow_cache_dir(1, cache=tmp_path) != first
