"""k heads on one backbone: one backbone pass, same scores as scoring each scorer alone."""
from __future__ import annotations

import math

import pytest
import torch

from imgpref.scorers.heads import CosineHead, LaionAestheticHead, LinearHead, MLPHead, build_head
from imgpref.scorers.multi import backbone_groups, score_with_shared_backbones
from imgpref.scorers.registry import load_scorer, load_scorers

TINY = "imgpref-tiny-vit"


def score_tolerance(reference: torch.Tensor) -> dict:
    """assert_close tolerances for fp32 scores: rtol 1e-5 relative to the scores' magnitude (a 100 * cos score
    differs by ~1e-5 between batched and single passes; an absolute 1e-6 would only hold for scores near 1)."""
    scale = max(1.0, float(reference.detach().abs().max())) if reference.numel() else 1.0
    return {"rtol": 1e-5, "atol": 1e-5 * scale}


def test_groups_and_one_pass_per_backbone(ckpts, images, prompts, monkeypatch):
    scorers = load_scorers(["hpsv2", "exposure", "colorfulness", "noise"],
                           weights={"hpsv2": ckpts["hpsv2"]}, arch=TINY)
    groups = backbone_groups(scorers)
    # local weights: the group key is the backbone key with the digest of those weights
    assert [k.split("#w")[0] for k in groups] == ["hpsv2:imgpref-tiny-vit", "pixels-256"]
    assert list(groups)[0] == scorers[0].backbone.key
    assert [s.name for s in groups["pixels-256"]] == ["exposure", "colorfulness", "noise"]
    singles = {s.name: s.score(images, prompts if s.needs_prompt else None) for s in scorers}

    calls = {"img": 0, "txt": 0}
    for bb in {id(s.backbone): s.backbone for s in scorers}.values():
        orig_i, orig_t = bb.embed_images, bb.embed_texts

        def ei(x, _o=orig_i):
            calls["img"] += 1
            return _o(x)

        def et(p, _o=orig_t):
            calls["txt"] += 1
            return _o(p)

        monkeypatch.setattr(bb, "embed_images", ei)
        monkeypatch.setattr(bb, "embed_texts", et)
    pixels = {k: torch.stack([g[0].backbone.preprocess(im) for im in images]) for k, g in groups.items()}
    got = score_with_shared_backbones(scorers, pixels, prompts)
    assert calls == {"img": 2, "txt": 1}
    for name, want in singles.items():
        # batched vs single passes differ by fp32 rounding on the score's own scale (100 * cos for hpsv2)
        torch.testing.assert_close(got[name], want, **score_tolerance(want))


def test_precomputed_embeddings_skip_image_tower(images):
    scorers = load_scorers(["contrast", "sharpness"])
    key = scorers[0].backbone.key
    emb = scorers[0].backbone.embed_images(torch.stack([scorers[0].preprocess(im) for im in images]))
    got = score_with_shared_backbones(scorers, {}, image_embeddings={key: emb})
    torch.testing.assert_close(got["sharpness"], emb[:, 3].float())
    with pytest.raises(ValueError, match="no pixels for backbone"):
        score_with_shared_backbones(scorers, {})


def test_prompt_errors(ckpts, images):
    scorers = load_scorers(["clipscore"], weights=ckpts["open_clip"], arch=TINY)
    px = {scorers[0].backbone.key: torch.stack([scorers[0].preprocess(im) for im in images])}
    with pytest.raises(ValueError, match="need prompts"):
        score_with_shared_backbones(scorers, px)
    with pytest.raises(ValueError, match="one prompt per image"):
        score_with_shared_backbones(scorers, px, ["a"])


def test_cosine_head_hand_values():
    img = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    txt = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    cos = torch.tensor([1.0, -1 / math.sqrt(2), -1.0])
    torch.testing.assert_close(CosineHead(scale=100.0)(img, txt), 100 * cos)
    torch.testing.assert_close(CosineHead(1.0, clamp_min=0.0, weight=2.5)(img, txt), torch.tensor([2.5, 0.0, 0.0]))
    learned = CosineHead(scale="learned", logit_scale_init=2.0)
    torch.testing.assert_close(learned(img, txt), math.exp(2.0) * cos)
    assert learned.describe() == {"type": "cosine", "scale": "learned", "clamp_min": None, "weight": 1.0}


def test_laion_head_layout_and_linear_collapse():
    head = LaionAestheticHead(8).eval()
    keys = set(head.state_dict())
    assert keys == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    assert LaionAestheticHead().layers[0].in_features == 768
    x = torch.randn(4, 8)
    # no activations: the MLP equals one affine map of the normalised embedding
    w, b = torch.eye(8), torch.zeros(8)
    for i in (0, 2, 4, 6, 7):
        lin = head.layers[i]
        w, b = lin.weight @ w, lin.weight @ b + lin.bias
    xn = x / x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(head(x), (xn @ w.T + b)[:, 0], atol=1e-5, rtol=1e-5)


def test_head_rebuild_from_description():
    for head in (LinearHead(8, prompt="product"), MLPHead(8, hidden=[4, 3], prompt="concat"),
                 CosineHead(100.0), LaionAestheticHead(8)):
        rebuilt = build_head(head.describe())
        assert type(rebuilt) is type(head) and rebuilt.describe() == head.describe()
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
            {k: v.shape for k, v in head.state_dict().items()}
    assert LinearHead(8, prompt="product").needs_text and not LinearHead(8).needs_text
    with pytest.raises(ValueError, match="prompt conditioning"):
        LinearHead(8, prompt="sum")


def test_load_scorer_does_not_share_by_default_but_can():
    a, b = load_scorer("contrast"), load_scorer("exposure")
    assert a.backbone is not b.backbone
    c, d = load_scorer("contrast", share_backbone=True), load_scorer("exposure", share_backbone=True)
    assert c.backbone is d.backbone
