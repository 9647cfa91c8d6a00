"""CLIP-IQA and Aesthetic Predictor V2.5 equal their reference computations on tiny weights in the published
layouts, written here with open_clip / transformers / torchvision directly (never imgpref's preprocessing)."""
from __future__ import annotations

import logging

import open_clip
import pytest
import torch
from torchvision import transforms as T

from imgpref.scorers.registry import load_scorer
from imgpref.scorers.weights import WeightsNotFoundError

TINY = "imgpref-tiny-vit"


@pytest.fixture(scope="module")
def v25_folder(tmp_path_factory):
    from imgpref.scorers.tiny_checkpoints import write_tiny_aesthetic_v25

    return write_tiny_aesthetic_v25(tmp_path_factory.mktemp("v25") / "v25", seed=3)


@torch.no_grad()
def clip_iqa_reference(weights, images, scale):
    """open_clip model + its eval transform; softmax(scale * cos) over ("Good photo.", "Bad photo."), P(good)."""
    from imgpref.scorers.tiny import register_open_clip_config

    register_open_clip_config()
    model = open_clip.create_model(TINY)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                    T.ToTensor(), T.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)])
    img = model.encode_image(torch.stack([tf(im.convert("RGB")) for im in images]))
    txt = model.encode_text(open_clip.get_tokenizer(TINY)(["Good photo.", "Bad photo."]))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (scale * img @ txt.T).softmax(-1)[:, 0]


@pytest.mark.parametrize("scale", [100.0, 2.0])
def test_clip_iqa_equals_reference(ckpts, images, scale):
    scorer = load_scorer("clip-iqa", weights=ckpts["open_clip"], arch=TINY, logit_scale=scale)
    got = scorer.score(images)
    want = clip_iqa_reference(ckpts["open_clip"], images, scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert ((got >= 0) & (got <= 1)).all()
    if scale == 2.0:  # not saturated, so the comparison means something beyond 0/1
        assert (got - 0.5).abs().max() < 0.49 and got.std() > 1e-3


@torch.no_grad()
def v25_reference(folder, images):
    """siglip_v2_5.py: SiglipVisionModel.from_pretrained + SiglipImageProcessor, pooler_output / norm, head."""
    from transformers import SiglipImageProcessor, SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(str(folder)).eval()
    proc = SiglipImageProcessor.from_pretrained(str(folder))
    emb = model(pixel_values=proc(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
                ).pooler_output
    x = emb / emb.norm(dim=-1, keepdim=True)
    sd = torch.load(folder / "aesthetic_predictor_v2_5.pth", map_location="cpu", weights_only=True)
    for i in (0, 2, 4, 6, 8):
        x = x @ sd[f"scoring_head.{i}.weight"].T + sd[f"scoring_head.{i}.bias"]
    return x.squeeze(-1)


def test_aesthetic_v25_equals_reference_and_logs_its_licence_once(v25_folder, images, caplog):
    import imgpref.scorers.metadata as md

    md._NOTICED.discard("aesthetic-v2.5")
    with caplog.at_level(logging.WARNING, logger="imgpref.licence"):
        scorer = load_scorer("aesthetic-v2.5", weights=v25_folder)
        load_scorer("aesthetic-v2.5", weights=v25_folder)
    notes = [r for r in caplog.records if r.name == "imgpref.licence"]
    assert len(notes) == 1 and "AGPL-3.0" in notes[0].getMessage()
    got = scorer.score(images)
    want = v25_reference(v25_folder, images)
    assert want.std() > 0.05
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_aesthetic_v25_missing_head_is_one_line(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        load_scorer("aesthetic-v2.5", weights=tmp_path)
    assert "aesthetic_predictor_v2_5.pth" in str(err.value) and "\n" not in str(err.value)
