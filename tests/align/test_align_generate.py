"""Generation with recorded per-image seeds: equal to a direct diffusers call, independent of batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgpref.align.generate import decode_latents, generate_images, image_seed, save_images


def test_seed_formula():
    assert image_seed(100, 0, 0, 4) == 100
    assert image_seed(100, 2, 3, 4) == 100 + 2 * 4 + 3


def test_matches_direct_pipeline_call_and_batching(tiny_pipe):
    prompts = ["a red cat", "a blue dog"]
    g = generate_images(tiny_pipe, prompts, n=2, base_seed=7, batch_size=3, num_inference_steps=3, guidance_scale=3.0)
    assert g.images.shape == (4, 3, 32, 32) and g.images.dtype == torch.float32
    assert float(g.images.min()) >= 0 and float(g.images.max()) <= 1
    assert g.seeds == [7, 8, 9, 10] and g.prompt_index == [0, 0, 1, 1] and g.k == [0, 1, 0, 1]
    assert g.prompts == ["a red cat", "a red cat", "a blue dog", "a blue dog"]
    # Image 3 (prompt 1, k 1, seed 10) equals plain diffusers with a generator seeded 10.
    direct = tiny_pipe(["a blue dog"], num_inference_steps=3, guidance_scale=3.0,
                       generator=torch.Generator().manual_seed(10), output_type="pt").images
    torch.testing.assert_close(g.images[3], direct[0], atol=1e-5, rtol=0)
    # Batch composition does not change an image.
    one = generate_images(tiny_pipe, prompts, n=2, base_seed=7, batch_size=1, num_inference_steps=3, guidance_scale=3.0)
    torch.testing.assert_close(one.images, g.images, atol=1e-5, rtol=0)
    # The recorded latents decode to the images.
    torch.testing.assert_close(decode_latents(tiny_pipe, g.latents), g.images, atol=1e-5, rtol=0)


def test_save_images_rounds_to_png(tmp_path):
    img = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    (path,) = save_images(img, [tmp_path / "sub" / "x.png"])
    arr = np.asarray(Image.open(path))
    assert arr.shape == (2, 2, 3)
    assert arr[..., 0].tolist() == [[0, 128], [255, 64]]  # round(x * 255)
    with pytest.raises(ValueError, match="paths"):
        save_images(img, [])


def test_bad_arguments(tiny_pipe):
    with pytest.raises(ValueError, match="prompt"):
        generate_images(tiny_pipe, [], n=1)
    with pytest.raises(ValueError, match="n"):
        generate_images(tiny_pipe, ["a"], n=0)
