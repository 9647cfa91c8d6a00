"""Generation on the tiny SD3 / FLUX pipelines: `generate_images` (recorded seeds, cached latents, our decode)
gives exactly what the pipeline's own __call__ gives for the same seed; FLUX latents are cached unpacked."""
import pytest
import torch

from imgpref.align.generate import decode_latents, generate_images, latent_shape
from imgpref.align.tiny_flow import build_tiny_flow_pipeline


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_generate_images_matches_the_pipeline_call(kind):
    pipe = build_tiny_flow_pipeline(kind, seed=0)
    pipe.set_progress_bar_config(disable=True)
    g = generate_images(pipe, ["a red cat", "a blue dog"], 1, base_seed=5, num_inference_steps=3, guidance_scale=2.0)
    c = pipe.vae.config.latent_channels
    assert g.latents.shape == (2, c, 16, 16) and g.seeds == [5, 6]
    with torch.no_grad():
        own = pipe("a blue dog", generator=torch.Generator().manual_seed(6), num_inference_steps=3, guidance_scale=2.0,
                   height=32, width=32, output_type="pt").images
    torch.testing.assert_close(g.images[1:], own, rtol=0, atol=1e-5)
    torch.testing.assert_close(decode_latents(pipe, g.latents), g.images, rtol=0, atol=1e-6)


def test_latent_shape_flux_needs_twice_the_vae_factor():
    pipe = build_tiny_flow_pipeline("flux", seed=0)
    assert latent_shape(pipe, None, None) == (32, 32, 1, 2)  # tiny default 32 px, 1 VAE channel, factor 2
    with pytest.raises(ValueError, match="multiples of 4"):
        latent_shape(pipe, 34, 32)


def test_saved_tiny_flux_folder_reloads_offline_with_identical_outputs(tmp_path):
    from imgpref.align.pipeline_io import load_pipeline
    from imgpref.align.tiny_flow import save_tiny_flow_pipeline

    save_tiny_flow_pipeline(tmp_path / "flux", "flux", seed=0)
    loaded, built = load_pipeline(tmp_path / "flux"), build_tiny_flow_pipeline("flux", seed=0)
    kw = dict(num_inference_steps=2, height=32, width=32, output_type="pt")
    for p in (loaded, built):
        p.set_progress_bar_config(disable=True)
    with torch.no_grad():
        a = loaded("a red cat", generator=torch.Generator().manual_seed(0), **kw).images
        b = built("a red cat", generator=torch.Generator().manual_seed(0), **kw).images
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # T5 (Unigram) tokenizer and weights saved and read back
