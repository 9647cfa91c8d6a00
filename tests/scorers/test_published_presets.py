"""Every published preset loads tiny weights in its published layout and equals a direct library computation."""
from __future__ import annotations

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from imgpref.scorers.registry import load_scorer
from imgpref.scorers.weights import WeightsNotFoundError



def to_unit_tensor(im: Image.Image) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]

TINY = "imgpref-tiny-vit"


def _tiny_open_clip(path):
    from imgpref.scorers.tiny import register_open_clip_config

    register_open_clip_config()
    model = open_clip.create_model(TINY, pretrained=None).eval()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(sd.get("state_dict", sd))
    return model


def _cos(a, b):
    return (a / a.norm(dim=-1, keepdim=True) * (b / b.norm(dim=-1, keepdim=True))).sum(-1)


def test_pickscore_matches_transformers(ckpts, images, prompts):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = ckpts["pickscore"]
    scorer = load_scorer("pickscore", weights=folder)
    got = scorer.score(images, prompts)

    model = CLIPModel.from_pretrained(str(folder)).eval()
    proc = CLIPImageProcessor.from_pretrained(str(folder))
    tok = CLIPTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        img = model.get_image_features(**proc(images=images, return_tensors="pt")).pooler_output
        # PickScore's reference code pads to the longest prompt; we pad to 77: equal under the causal mask
        txt = model.get_text_features(**tok(prompts, padding=True, truncation=True, max_length=77,
                                            return_tensors="pt")).pooler_output
        want = model.logit_scale.exp() * _cos(img, txt)
    assert float(model.logit_scale.exp()) == pytest.approx(float(torch.tensor(3.0).exp()), rel=1e-6)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert scorer.needs_prompt and scorer.score_range is None


@pytest.mark.parametrize("version", ["hpsv2", "hpsv2.1"])
def test_hps_matches_open_clip_with_hps_preprocessing(ckpts, images, prompts, version):
    path = ckpts[version]
    scorer = load_scorer(version, weights=path.parent, arch=TINY)  # a folder holding the file works too
    got = scorer.score(images, prompts)

    model = _tiny_open_clip(path)
    size = 32
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD

    def hps_preprocess(im: Image.Image) -> torch.Tensor:  # HPS: long side to 224 (here 32), zero padding, centred
        w, h = im.size
        scale = size / max(w, h)
        nh, nw = round(h * scale), round(w * scale)
        im = TF.resize(im, [nh, nw], interpolation=TF.InterpolationMode.BICUBIC)
        ph, pw = size - nh, size - nw
        im = TF.pad(im, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
        return TF.normalize(TF.to_tensor(im), mean, std)

    with torch.no_grad():
        img = model.encode_image(torch.stack([hps_preprocess(im) for im in images]))
        txt = model.encode_text(open_clip.get_tokenizer(TINY)(prompts))
        want = 100 * _cos(img, txt)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert scorer.backbone.resize_mode == "pad"


def test_laion_aesthetic_matches_open_clip_and_published_mlp(ckpts, images):
    head_path = ckpts["laion_head"]
    scorer = load_scorer("laion-aesthetic", weights=head_path, arch=TINY, backbone_weights=ckpts["open_clip"])
    got = scorer.score(images)
    assert not scorer.needs_prompt

    model = _tiny_open_clip(ckpts["open_clip"])
    preprocess = open_clip.image_transform(32, is_train=False)
    sd = torch.load(head_path, weights_only=True)
    assert {k for k in sd} == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    with torch.no_grad():
        x = model.encode_image(torch.stack([preprocess(im) for im in images]))
        x = x / x.norm(dim=-1, keepdim=True)
        for i in (0, 2, 4, 6, 7):  # published MLP: Linear layers, no activations (dropout is off in eval)
            x = x @ sd[f"layers.{i}.weight"].T + sd[f"layers.{i}.bias"]
    torch.testing.assert_close(got, x[:, 0], atol=1e-5, rtol=1e-5)


def test_clipscore_matches_open_clip_per_image(ckpts, images, prompts):
    scorer = load_scorer("clipscore", weights=ckpts["open_clip"], arch=TINY)
    got = scorer.score(images, prompts)
    model = _tiny_open_clip(ckpts["open_clip"])
    preprocess = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(im) for im in images]))
        txt = model.encode_text(open_clip.get_tokenizer(TINY)(prompts))
        want = 2.5 * _cos(img, txt).clamp(min=0)
    assert got.shape == (3,)  # one score per image, never a batch mean
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_differentiable_path_close_to_pil_and_has_gradients(ckpts, images, prompts):
    scorer = load_scorer("hpsv2", weights=ckpts["hpsv2"], arch=TINY)
    x = to_unit_tensor(images[0]).requires_grad_(True)
    s = scorer(x, prompts[:1])
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the torch resize is not bit-identical to PIL's, but the scores agree closely (HPS scale: 100 * cos)
    assert float(s) == pytest.approx(float(scorer.score(images[:1], prompts[:1])), abs=2.0)


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
