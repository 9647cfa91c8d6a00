"""PickScore equals its reference code (the PickScore README: CLIP processor + CLIPModel, fp32), RGBA included.

The reference hands PIL images straight to the CLIP processor, which converts them to RGB itself (transformers 5
composites transparency over white). The expected values below come from transformers alone.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from imgpref.scorers.registry import load_scorer
from imgpref.scorers.score_paths import score_paths

ATOL = 1e-4  # logit_scale.exp() * cos with logit_scale = 3 (scores ~ +-20) in float32


def _with_alpha(rgb: np.ndarray, mode: str) -> Image.Image:
    """A photo with an alpha ramp 0..255 left to right (fully transparent at the left edge)."""
    h, w = rgb.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return im.convert("LA") if mode == "LA" else im


@pytest.fixture(scope="module")
def transparent_images() -> list[Image.Image]:
    a = np.asarray(Image.fromarray(data.astronaut()).resize((96, 64)))
    c = np.asarray(Image.fromarray(data.chelsea()).resize((50, 80)))
    return [_with_alpha(a, "RGBA"), _with_alpha(c, "LA")]


@torch.no_grad()
def pickscore_reference(folder, images, prompts) -> torch.Tensor:
    """The PickScore README's calc_probs scores (before softmax), one prompt per image."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(folder)).eval()
    processor = CLIPImageProcessor.from_pretrained(str(folder))
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    image_embs = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
    image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
    text_inputs = tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    text_embs = model.get_text_features(**text_inputs).pooler_output
    text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
    return model.logit_scale.exp() * (text_embs * image_embs).sum(-1)


def test_pickscore_with_transparency_equals_the_clip_processor(ckpts, transparent_images, prompts):
    scorer = load_scorer("pickscore", weights=ckpts["pickscore"])
    got = scorer.score(transparent_images, prompts[:2])
    want = pickscore_reference(ckpts["pickscore"], transparent_images, prompts[:2])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_pickscore_files_through_the_engine_equal_the_reference(ckpts, transparent_images, images, tmp_path):
    """`imgpref score`'s engine on PNG (with alpha) and JPEG files = the processor on `Image.open(file)`."""
    paths = []
    for i, im in enumerate(transparent_images):
        paths.append(tmp_path / f"t{i}.png")
        im.save(paths[-1])
    paths.append(tmp_path / "photo.jpg")
    images[0].save(paths[-1], quality=95)
    scorer = load_scorer("pickscore", weights=ckpts["pickscore"])
    table = score_paths([str(p) for p in paths], [scorer], prompt="a photo", num_workers=0, progress=False)
    got = torch.tensor([float(table.set_index("path").loc[str(p), "score"]) for p in paths])
    want = pickscore_reference(ckpts["pickscore"], [Image.open(p) for p in paths], ["a photo"] * len(paths))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
