"""CLIPScore and the LAION aesthetic predictor equal their reference code, written out here the reference's way;
OpenAI's TorchScript checkpoints (`ViT-L-14.pt`) load.

CLIPScore (github.com/jmhessel/clipscore, clipscore.py): caption "A photo depicts " + candidate; image transform
Resize(224, bicubic) -> CenterCrop -> RGB -> ToTensor -> Normalize(OpenAI mean/std) on the PIL image; features
L2-normalised with sklearn; score w * clip(cos, 0, None) with w = 2.5, one per image.
LAION aesthetic (improved-aesthetic-predictor, simple_inference.py): the same OpenAI transform, the image
embedding normalised with numpy, then the MLP (Linear layers only, dropout off in eval).
"""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import sklearn.preprocessing
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from imgpref.scorers.registry import load_scorer, load_scorers
from imgpref.scorers.score_paths import score_paths

TINY = "imgpref-tiny-vit"
SIZE = 32  # the tiny model's input resolution (224 for the published models)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script / load are deprecated
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def openai_transform(n_px: int) -> Compose:
    return Compose([Resize(n_px, interpolation=InterpolationMode.BICUBIC), CenterCrop(n_px),
                    lambda image: image.convert("RGB"), ToTensor(), Normalize(OPENAI_MEAN, OPENAI_STD)])


def tiny_model(state_dict: dict) -> torch.nn.Module:
    from imgpref.scorers.tiny import register_open_clip_config

    register_open_clip_config()
    model = open_clip.create_model(TINY, pretrained=None).eval()
    keep = {k: v.float() for k, v in state_dict.items() if k not in ("input_resolution", "context_length",
                                                                      "vocab_size", "attn_mask")}
    model.load_state_dict(keep)
    return model


@torch.no_grad()
def jmhessel_clipscore(model, images, candidates, prefix="A photo depicts", w=2.5) -> np.ndarray:
    if prefix and prefix[-1] != " ":
        prefix += " "
    tokens = open_clip.get_tokenizer(TINY)([prefix + c for c in candidates])  # clip.tokenize's BPE
    img = model.encode_image(torch.stack([openai_transform(SIZE)(im) for im in images])).numpy()
    txt = model.encode_text(tokens).numpy()
    img = sklearn.preprocessing.normalize(img, axis=1)
    txt = sklearn.preprocessing.normalize(txt, axis=1)
    return w * np.clip(np.sum(img * txt, axis=1), 0, None)


@pytest.fixture(scope="module")
def captions() -> list[str]:
    # with random tiny weights most cosines are negative (score 0); these give positive ones for both texts
    return ["an astronaut", "a cat", "coffee"]


def test_clipscore_prefixes_captions_like_jmhessel(ckpts, images, captions):
    model = tiny_model(torch.load(ckpts["open_clip"], weights_only=True))
    with_prefix = jmhessel_clipscore(model, images, captions)
    without = jmhessel_clipscore(model, images, captions, prefix="")
    assert np.abs(with_prefix - without).max() > 1e-3  # the prefix matters for these captions
    got = load_scorer("clipscore", weights=ckpts["open_clip"], arch=TINY).score(images, captions)
    np.testing.assert_allclose(got.numpy(), with_prefix, atol=1e-5, rtol=0)
    got_off = load_scorer("clipscore-noprefix", weights=ckpts["open_clip"], arch=TINY).score(images, captions)
    np.testing.assert_allclose(got_off.numpy(), without, atol=1e-5, rtol=0)


def test_clipscore_prefix_per_scorer_on_a_shared_backbone(ckpts, images, captions, tmp_path):
    """Both variants share one backbone (one image pass); each gets its own text, in the engine too."""
    scorers = load_scorers(["clipscore", "clipscore-noprefix"], arch=TINY,
                           weights={"clipscore": ckpts["open_clip"], "clipscore-noprefix": ckpts["open_clip"]})
    assert scorers[0].backbone is scorers[1].backbone
    assert scorers[0].info.extra["caption_prefix"] == "A photo depicts "
    model = tiny_model(torch.load(ckpts["open_clip"], weights_only=True))
    paths, prompts = [], {}
    for i, (im, cap) in enumerate(zip(images, captions)):
        paths.append(str(tmp_path / f"im{i}.png"))
        im.save(paths[-1])
        prompts[paths[-1]] = cap
    table = score_paths(paths, scorers, prompts=prompts, num_workers=0, progress=False)
    for s, prefix in ((scorers[0], "A photo depicts"), (scorers[1], "")):
        sub = table[table.scorer == s.name].set_index("path")
        want = jmhessel_clipscore(model, [Image.open(p) for p in paths], captions, prefix=prefix)
        np.testing.assert_allclose([sub.loc[p, "score"] for p in paths], want, atol=1e-5, rtol=0)


def _laion_reference(model, head_sd, images) -> np.ndarray:
    with torch.no_grad():
        feats = model.encode_image(torch.stack([openai_transform(SIZE)(im) for im in images])).numpy()
    l2 = np.atleast_1d(np.linalg.norm(feats, 2, -1))  # simple_inference.normalized
    l2[l2 == 0] = 1
    x = torch.from_numpy(feats / np.expand_dims(l2, -1)).float()
    for i in (0, 2, 4, 6, 7):
        x = x @ head_sd[f"layers.{i}.weight"].T + head_sd[f"layers.{i}.bias"]
    return x[:, 0].numpy()


class _OpenAIJitLayout(torch.nn.Module):
    """A module whose state dict has the layout of OpenAI's TorchScript CLIP files (`ViT-L-14.pt`): the CLIP
    weights under OpenAI's names plus the `input_resolution`, `context_length`, `vocab_size` buffers."""

    def __init__(self, clip: torch.nn.Module, resolution: int):
        super().__init__()
        for name, child in clip.named_children():
            setattr(self, name, child)
        for name, p in clip.named_parameters(recurse=False):
            self.register_parameter(name, p)
        self.register_buffer("input_resolution", torch.tensor(resolution))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def openai_jit_file(ckpts, tmp_path_factory):
    """A tiny TorchScript archive in OpenAI's layout, float16 like the published files, named `<arch>.pt`."""
    folder = tmp_path_factory.mktemp("openai-jit")
    model = tiny_model(torch.load(ckpts["open_clip"], weights_only=True))
    scripted = torch.jit.script(_OpenAIJitLayout(model, SIZE).half())
    path = folder / f"{TINY}.pt"
    scripted.save(str(path))
    (folder / "sac+logos+ava1-l14-linearMSE.pth").write_bytes(ckpts["laion_head"].read_bytes())
    return path


@pytest.mark.parametrize("source", ["open_clip_bin", "openai_torchscript"])
def test_laion_aesthetic_equals_reference(ckpts, images, openai_jit_file, source):
    head_sd = torch.load(ckpts["laion_head"], weights_only=True)
    if source == "open_clip_bin":
        scorer = load_scorer("laion-aesthetic", weights=ckpts["laion_head"], arch=TINY,
                             backbone_weights=ckpts["open_clip"])
        ref_sd = torch.load(ckpts["open_clip"], weights_only=True)
    else:  # a folder holding `<arch>.pt` (OpenAI's TorchScript file) and the head
        scorer = load_scorer("laion-aesthetic", weights=openai_jit_file.parent, arch=TINY)
        ref_sd = torch.jit.load(str(openai_jit_file), map_location="cpu").state_dict()
    want = _laion_reference(tiny_model(ref_sd), head_sd, images)
    np.testing.assert_allclose(scorer.score(images).numpy(), want, atol=1e-4, rtol=0)


def test_clipscore_reads_an_openai_torchscript_file(ckpts, images, captions, openai_jit_file):
    got = load_scorer("clipscore", weights=openai_jit_file, arch=TINY).score(images, captions)
    model = tiny_model(torch.jit.load(str(openai_jit_file), map_location="cpu").state_dict())
    np.testing.assert_allclose(got.numpy(), jmhessel_clipscore(model, images, captions), atol=1e-5, rtol=0)
