"""Exports load with plain diffusers and reproduce the trained module's images for the same seed."""
import torch

from imgpref.align.export import export_aligned, load_aligned_pipeline, read_align_meta
from imgpref.align.module import DiffusionPreferenceModule
from imgpref.align.tiny import build_tiny_pipeline

torch.set_num_threads(2)
PROMPTS = ["a red cat", "a blue dog"]


def _trained(finetune, **kw):
    m = DiffusionPreferenceModule(method="mapo", finetune=finetune, lr=5e-2, **kw)
    opt = m.configure_optimizers()["optimizer"]
    g = torch.Generator().manual_seed(0)
    batch = {"pixels_w": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
             "pixels_l": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "prompt": PROMPTS}
    for _ in range(2):  # two real optimiser steps through the module's own loss
        loss, _ = m.pair_losses(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m


def _generate(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPTS, num_inference_steps=3, guidance_scale=5.0, generator=torch.Generator().manual_seed(7),
                output_type="pt").images


def test_lora_export_loads_with_plain_diffusers_and_reproduces(tmp_path):
    m = _trained("lora", lora_rank=4, lora_alpha=8)  # alpha != rank: the scale must survive the export
    ours = m.generate(PROMPTS, seed=7, num_inference_steps=3, guidance_scale=5.0)
    export_aligned(m, tmp_path)
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()
    pipe = build_tiny_pipeline(seed=0)  # a fresh base pipeline
    base = _generate(pipe)
    pipe.load_lora_weights(str(tmp_path))  # plain diffusers
    theirs = _generate(pipe)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert (base - ours).abs().max() > 1e-3  # the LoRA changed the images, so the comparison means something
    assert read_align_meta(tmp_path)["format"] == "lora"


def test_full_export_via_save_pretrained_reproduces(tmp_path):
    from diffusers import UNet2DConditionModel

    m = _trained("full")
    ours = m.generate(PROMPTS, seed=7, num_inference_steps=3, guidance_scale=5.0)
    export_aligned(m, tmp_path / "aligned")
    pipe = build_tiny_pipeline(seed=0)
    pipe.unet = UNet2DConditionModel.from_pretrained(tmp_path / "aligned", subfolder="unet")
    torch.testing.assert_close(_generate(pipe), ours, rtol=0, atol=1e-5)
    # load_aligned_pipeline rebuilds the base named in imgpref_align.yaml; a run folder (holding aligned/) works too
    torch.testing.assert_close(_generate(load_aligned_pipeline(tmp_path)), ours, rtol=0, atol=1e-5)
