"""The five weight-free measures equal a direct numpy / scikit-image computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.color import rgb2gray
from skimage.filters import laplace
from skimage.restoration import estimate_sigma

from imgpref.scorers.pixels import MEASURES, PixelStatsBackbone
from imgpref.scorers.registry import list_scorers, load_scorer, load_scorers


def _numpy_measures(rgb01: np.ndarray) -> dict[str, float]:
    """rgb01: [H, W, 3] float64 in [0, 1]; the published definitions written out directly."""
    r, g, b = (rgb01 * 255.0).transpose(2, 0, 1)
    rg, yb = r - g, 0.5 * (r + g) - b
    colorful = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    lum = rgb2gray(rgb01)
    return {
        "colorfulness": colorful,
        "contrast": lum.std(),
        "exposure": np.exp(-((lum - 0.5) ** 2) / (2 * 0.2**2)).mean(),
        "sharpness": laplace(lum).var(),
        "noise": estimate_sigma(lum),
    }


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((160, 120))


def test_presets_listed():
    assert set(MEASURES) <= set(list_scorers())


def _working_image(im: Image.Image, size: int = 256) -> np.ndarray:
    """The documented working image, by hand: short side to `size` (PIL bicubic), centre crop, [0, 1]."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float64) / 255.0


@pytest.mark.parametrize("name", MEASURES)
def test_measure_matches_skimage(astronaut, name):
    scorer = load_scorer(name)
    working = _working_image(astronaut)
    np.testing.assert_allclose(scorer.backbone.preprocess(astronaut).permute(1, 2, 0).numpy(), working, atol=1e-6)
    expected = _numpy_measures(working)[name]
    got = float(scorer.score([astronaut])[0])
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_transparent_images_are_composited_over_white(astronaut):
    """The Python API treats alpha as the file loader does (over white), not by dropping it."""
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: a white image
    scorer = load_scorer("contrast", size=32)
    assert float(scorer.score([rgba])[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(scorer.score([astronaut])[0]) > 0.1


def test_all_measures_one_pass_and_float64_exact(astronaut):
    bb = PixelStatsBackbone(64)
    x = bb.preprocess(astronaut).unsqueeze(0).double()
    emb = bb.embed_images(x)[0]
    expected = _numpy_measures(x[0].permute(1, 2, 0).numpy())
    for i, name in enumerate(MEASURES):
        assert float(emb[i]) == pytest.approx(expected[name], rel=1e-10, abs=1e-12), name


def test_hand_computed_values():
    # a flat mid-grey image: no colour, no contrast, perfect exposure, zero Laplacian
    flat = torch.full((1, 3, 32, 32), 0.5, dtype=torch.float64)
    emb = PixelStatsBackbone(32).embed_images(flat)[0]
    assert emb[:4].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0], abs=1e-12)
    # pure red: rg = 255, yb = 127.5, no spread -> M3 = 0.3 * sqrt(255^2 + 127.5^2)
    red = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    red[:, 0] = 1.0
    assert float(PixelStatsBackbone(16).embed_images(red)[0, 0]) == pytest.approx(0.3 * np.hypot(255, 127.5))


def test_differentiable_except_noise(astronaut):
    bb = PixelStatsBackbone(32)
    x = torch.rand(2, 3, 40, 48, requires_grad=True)
    emb = bb.embed_images(bb.pixels_to_input(x))
    for i in range(4):
        (g,) = torch.autograd.grad(emb[:, i].sum(), x, retain_graph=True)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, MEASURES[i]
    (g,) = torch.autograd.grad(emb[:, 4].sum(), x, retain_graph=True, allow_unused=True)
    assert g is None or float(g.abs().sum()) == 0.0  # noise (skimage) carries no gradient
    # a scorer forward on [0, 1] tensors gives gradients, and the reward negates lower-is-better
    sharp = load_scorer("sharpness", size=32)
    assert sharp(x).shape == (2,)
    noise = load_scorer("noise", size=32)
    assert torch.allclose(noise.as_reward()(x.detach()), -noise.score(x.detach()))


def test_tensor_path_close_to_pil_path(astronaut):
    bb = PixelStatsBackbone(64)
    pil = bb.preprocess(astronaut)
    t = torch.from_numpy(np.asarray(astronaut, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    tens = bb.pixels_to_input(t)[0]
    assert tens.shape == pil.shape
    assert (tens - pil).abs().mean() < 0.01  # PIL and torch bicubic antialias differ only by rounding


def test_shared_backbone_and_lower_is_better():
    scorers = load_scorers(["exposure", "colorfulness", "noise"])
    assert scorers[0].backbone is scorers[1].backbone is scorers[2].backbone
    assert scorers[2].higher_is_better is False and scorers[0].higher_is_better
    assert scorers[1].score_range is None and scorers[0].score_range == (0.0, 1.0)


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="colorfulness"):
        load_scorer("colourfulness")
