"""Every CLIP / BLIP / SigLIP preset is a differentiable reward on pixels in [0, 1]: its value equals `score()`
on the same images up to the resize (torch bicubic vs PIL; HPS resizes the tensor itself, so it is exact), and
its gradient with respect to the pixels is finite and non-zero."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgpref.scorers.registry import load_scorer

TINY = "imgpref-tiny-vit"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from imgpref.scorers import tiny_checkpoints as tc

    root = tmp_path_factory.mktemp("zoo")
    oc = tc.write_tiny_open_clip_weights(root / "oc" / "open_clip_pytorch_model.bin", seed=4)
    tc.write_tiny_laion_head(root / "oc" / "sac+logos+ava1-l14-linearMSE.pth", 32, seed=5)
    return {
        "pickscore": ({"weights": tc.write_tiny_pickscore(root / "pick", seed=1)}, 0.05),
        "hpsv2": ({"weights": tc.write_tiny_hps_checkpoint(root / "hps" / "HPS_v2_compressed.pt", seed=2),
                   "arch": TINY}, 1e-4),
        "laion-aesthetic": ({"weights": root / "oc", "arch": TINY}, 0.05),
        "clipscore": ({"weights": oc, "arch": TINY}, 0.05),
        "clip-iqa": ({"weights": oc, "arch": TINY, "logit_scale": 2.0}, 0.02),
        "imagereward": ({"weights": tc.write_tiny_imagereward(root / "ir", seed=7)}, 0.05),
        "aesthetic-v2.5": ({"weights": tc.write_tiny_aesthetic_v25(root / "v25", seed=3)}, 0.05),
    }


def _unit(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", ["pickscore", "hpsv2", "laion-aesthetic", "clipscore", "clip-iqa", "imagereward",
                                  "aesthetic-v2.5"])
def test_differentiable_reward_equals_score_and_has_finite_gradients(zoo, images, prompts, name):
    kwargs, tol = zoo[name]
    scorer = load_scorer(name, **kwargs)
    reward = scorer.as_differentiable_reward()
    ps = prompts[:1] if scorer.needs_prompt else None
    x = _unit(images[0]).requires_grad_(True)
    r = reward(x, ps)
    r.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    want = float(scorer.score(images[:1], ps))
    assert float(r.detach()) == pytest.approx(want, abs=tol), name
