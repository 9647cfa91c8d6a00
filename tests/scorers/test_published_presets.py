"""Published presets: loading tiny weights in the published layouts, gradients, missing-weights errors.

Equality with each reference's own code: tests/scorers/test_parity_*.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgpref.scorers.registry import load_scorer
from imgpref.scorers.weights import WeightsNotFoundError

TINY = "imgpref-tiny-vit"


def to_unit_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def test_differentiable_path_has_gradients_and_equals_file_scores(ckpts, images, prompts):
    scorer = load_scorer("hpsv2", weights=ckpts["hpsv2"], arch=TINY)
    x = to_unit_tensor(images[0]).requires_grad_(True)
    s = scorer(x, prompts[:1])
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # HPS resizes the float tensor itself, so the reward path is the file path (100 * cos, fp32 rounding)
    assert float(s.detach()) == pytest.approx(float(scorer.score(images[:1], prompts[:1])), abs=1e-4)
    clip = load_scorer("clipscore", weights=ckpts["open_clip"], arch=TINY)
    # centre-crop presets resize with PIL for files and with torch for rewards: close, not equal
    assert float(clip(x.detach(), prompts[:1]).detach()) == pytest.approx(float(clip.score(images[:1], prompts[:1])), abs=0.1)


def test_clipscore_variants_with_and_without_the_reference_prefix():
    from imgpref.scorers.presets import CLIPSCORE_BACKBONES, CLIPSCORE_PREFIX
    from imgpref.scorers.registry import get_preset, list_scorers

    assert CLIPSCORE_PREFIX == "A photo depicts "
    for name in CLIPSCORE_BACKBONES:
        assert get_preset(name).info.extra["caption_prefix"] == CLIPSCORE_PREFIX
        assert get_preset(name + "-noprefix").info.extra["caption_prefix"] == ""
        assert name + "-noprefix" in list_scorers()


@pytest.mark.parametrize(
    "name,needle",
    [("hpsv2", "HPS_v2_compressed.pt"), ("hpsv2.1", "HPS_v2.1_compressed.pt"),
     ("pickscore", "yuvalkirstain/PickScore_v1"), ("laion-aesthetic", "open_clip ViT-L-14 'openai' weights"),
     ("clipscore", "open_clip ViT-B-32 'openai' weights")],
)
def test_missing_weights_offline_one_clear_line(offline_hf, name, needle):
    with pytest.raises(WeightsNotFoundError) as ei:
        load_scorer(name)
    msg = str(ei.value)
    assert "\n" not in msg
    assert needle in msg and str(offline_hf) in msg and "--weights PATH" in msg


def test_missing_laion_head_names_the_file(ckpts):
    with pytest.raises(WeightsNotFoundError, match=r"sac\+logos\+ava1-l14-linearMSE\.pth.*--weights PATH"):
        load_scorer("laion-aesthetic", arch=TINY, backbone_weights=ckpts["open_clip"])


def test_weights_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="HPS_v2_compressed.pt"):
        load_scorer("hpsv2", weights=tmp_path / "nope.pt", arch=TINY)
