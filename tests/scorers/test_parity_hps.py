"""HPSv2 / v2.1 equal HPS's own eval code, written out here the reference's way (torchvision on tensors).

Reference (github.com/tgxs002/HPSv2, hpsv2/src/open_clip/transform.py + img_score.py): the eval transform is
RGB -> ToTensor -> ResizeMaxSize on the *tensor* (scale = 224 / long side, new sides round(side * scale),
torchvision bicubic resize, zero padding centred, skipped when scale == 1) -> Normalize; the score is
image_features @ text_features.T of the normalised features (cos); HPS's benchmark reports 100 * cos.
"""
from __future__ import annotations

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from skimage import data
from torchvision.transforms import InterpolationMode

from imgpref.scorers.registry import load_scorer

TINY = "imgpref-tiny-vit"
SIZE = 32  # the tiny model's input resolution (224 for ViT-H-14)
# 100 * cos in float32: one batch of images against one image at a time differs by ~1e-5
ATOL = 1e-4


def hps_eval_transform(im: Image.Image) -> torch.Tensor:
    """HPS's `image_transform(is_train=False, resize_longest_max=True)`, step by step."""
    x = TF.to_tensor(im if im.mode == "RGBA" else im.convert("RGB"))  # _convert_to_rgb_or_rgba, ToTensor
    height, width = x.shape[1:]
    scale = SIZE / float(max(height, width))
    if scale != 1.0:  # ResizeMaxSize.forward
        new_size = tuple(round(dim * scale) for dim in (height, width))
        x = TF.resize(x, list(new_size), InterpolationMode.BICUBIC)
        pad_h, pad_w = SIZE - new_size[0], SIZE - new_size[1]
        x = TF.pad(x, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return TF.normalize(x, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)


def hps_model(path) -> torch.nn.Module:
    from imgpref.scorers.tiny import register_open_clip_config

    register_open_clip_config()
    model = open_clip.create_model(TINY, pretrained=None).eval()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["state_dict"] if "state_dict" in ckpt else ckpt)
    return model


@torch.no_grad()
def hps_benchmark_scores(model, images, prompts) -> torch.Tensor:
    """One image at a time, as `hpsv2.score` does; x100 as in HPS's benchmark tables."""
    tok = open_clip.get_tokenizer(TINY)
    out = []
    for im, prompt in zip(images, prompts):
        img = model.encode_image(hps_eval_transform(im)[None], normalize=True)
        txt = model.encode_text(tok([prompt]), normalize=True)
        out.append(100 * (img @ txt.T)[0, 0])
    return torch.stack(out)


@pytest.fixture(scope="module")
def hps_images(images) -> list[Image.Image]:
    """Downscaled photos of three aspect ratios, an upscaled small one, and one already at SIZE x SIZE."""
    small = Image.fromarray(data.rocket()).resize((20, 12))
    exact = Image.fromarray(data.coffee()).resize((SIZE, SIZE))
    return list(images) + [small, exact]


@pytest.mark.parametrize("version", ["hpsv2", "hpsv2.1"])
def test_hps_equals_reference_tensor_resize_order(ckpts, hps_images, prompts, version):
    texts = (prompts * 2)[: len(hps_images)]
    scorer = load_scorer(version, weights=ckpts[version], arch=TINY)
    got = scorer.score(hps_images, texts)
    want = hps_benchmark_scores(hps_model(ckpts[version]), hps_images, texts)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_hps_preprocess_is_the_reference_transform_and_the_differentiable_path(ckpts, hps_images):
    scorer = load_scorer("hpsv2", weights=ckpts["hpsv2"], arch=TINY)
    for im in hps_images:
        want = hps_eval_transform(im)
        torch.testing.assert_close(scorer.preprocess(im), want, atol=1e-6, rtol=0)
        # the reward path (float pixels in [0, 1]) is the same computation, so rewards equal file scores
        pixels = TF.to_tensor(im.convert("RGB"))[None]
        torch.testing.assert_close(scorer.backbone.pixels_to_input(pixels)[0], want, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def big_jpegs(tmp_path_factory):
    """Photos saved as 1024-pixel JPEGs (quality 90): big enough that reduced-size decoding would kick in."""
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("jpegs")
    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "china": load_sample_images().images[0]}
    for name, arr in photos.items():
        im = Image.fromarray(arr)
        scale = 1024 / max(im.size)
        im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC).save(
            folder / f"{name}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))


def _reference_for_files(ckpts, paths, prompt="a photo") -> torch.Tensor:
    # HPS opens the file with PIL and decodes it at full size (no draft mode, no EXIF rotation)
    return hps_benchmark_scores(hps_model(ckpts["hpsv2"]), [Image.open(p) for p in paths], [prompt] * len(paths))


def test_imgpref_score_reproduces_hps_by_default_and_fast_is_opt_in(ckpts, big_jpegs, tmp_path, monkeypatch):
    """The CLI decodes at full size unless --fast, which drafts JPEGs (and would run bf16 on CUDA)."""
    from typer.testing import CliRunner

    import imgpref.cli.score as cli_score
    from imgpref.cli import app
    from imgpref.scorers.output import read_scores

    scorer = load_scorer("hpsv2", weights=ckpts["hpsv2"], arch=TINY)
    monkeypatch.setattr(cli_score, "load_scorers_for_cli", lambda specs, weights, device: [scorer])
    def run(*flags: str) -> torch.Tensor:
        out = tmp_path / f"scores{len(flags)}.csv"
        res = CliRunner().invoke(app, ["score", str(big_jpegs[0].parent), "-s", "hpsv2", "--prompt", "a photo",
                                       "--out", str(out), "--workers", "0", "--device", "cpu", "-q", *flags])
        assert res.exit_code == 0, res.output
        table = read_scores(out).set_index("path")
        return torch.tensor([float(table.loc[str(p), "score"]) for p in big_jpegs])

    want = _reference_for_files(ckpts, big_jpegs)
    torch.testing.assert_close(run(), want, atol=ATOL, rtol=0)
    # --fast decodes drafted JPEGs: a small, documented deviation (README, "Parity with reference code")
    assert float((run("--fast") - want).abs().max()) > ATOL
