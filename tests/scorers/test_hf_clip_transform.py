"""The HF-CLIP backbone's tensor transforms against transformers' own `CLIPImageProcessor` (the reference that
PickScore's code calls): where the centre crop starts, the differentiable `pixels_to_input`, and the PIL-arithmetic
path `--decode gpu` uses (`gpu_decode.tensor_transform`)."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from imgpref.data.sample_shards import jpeg_bytes
from imgpref.scorers import gpu_decode
from imgpref.scorers.backbones.hf_clip_backbone import HFClipBackbone
from imgpref.scorers.backbones.resize import crop_offset, resize_short_center_crop, unit_tensor
from imgpref.scorers.tiny_checkpoints import tiny_hf_clip

# (width, height) of textured test photos: odd and even crop margins on either axis, up- and downscaling.
SIZES = [(96, 64), (94, 64), (48, 80), (20, 24), (640, 427)]
# Measured on these images (transformers 5 processor, uint8 resize): the differentiable float path is off by at
# most 4.43 grey levels (one float bicubic pass against rounded 8-bit passes), the PIL-arithmetic path by 1.00.
FLOAT_TOL_LEVELS = 5.0
PIL_TOL_LEVELS = 1.01


def _backbone(resize: int, crop: int) -> HFClipBackbone:
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor(size={"shortest_edge": resize}, crop_size={"height": crop, "width": crop})
    return HFClipBackbone(tiny_hf_clip(), proc, tokenizer=None, key="tiny-hf")


def _levels(a: torch.Tensor, b: torch.Tensor, std) -> float:
    """Largest difference of two normalised inputs [3, H, W], back in 0..255 pixel units."""
    return float(((a - b).abs() * torch.tensor(std).view(3, 1, 1) * 255).max())


def test_crop_offsets_by_hand():
    # an odd margin of 15: torchvision rounds 7.5 to 8 (half to even), transformers floors to 7
    assert crop_offset(15, "round") == 8 and crop_offset(15, "floor") == 7
    assert crop_offset(1, "round") == 0 and crop_offset(3, "round") == 2  # round half to even: 0.5 -> 0, 1.5 -> 2
    assert crop_offset(17, "round") == crop_offset(17, "floor") == 8  # 8.5 rounds to even: no difference
    assert crop_offset(3, "floor") == 1 and crop_offset(16, "round") == crop_offset(16, "floor") == 8
    with pytest.raises(ValueError, match="offsets must be one of"):
        crop_offset(3, "ceil")


@pytest.mark.parametrize("resize,crop", [(32, 32), (36, 32)])
@pytest.mark.parametrize("wh", SIZES)
def test_pixels_to_input_follows_the_clip_processor(resize, crop, wh):
    bb = _backbone(resize, crop)
    im = Image.open(io.BytesIO(jpeg_bytes(3, wh))).convert("RGB")
    want = bb.preprocess(im)  # transformers' CLIPImageProcessor
    got = bb.pixels_to_input(unit_tensor(im)[None])[0]
    assert got.shape == want.shape == (3, crop, crop)
    assert _levels(got, want, bb.std) <= FLOAT_TOL_LEVELS


def test_round_offsets_would_miss_the_processor_by_a_pixel():
    """The check above is sensitive to the crop rule: 94 x 64 -> 47 x 32 leaves a margin of 15 columns, and
    torchvision's rounding (8) lands one column right of transformers' floor (7): tens of grey levels on a
    textured photo."""
    bb = _backbone(32, 32)
    im = Image.open(io.BytesIO(jpeg_bytes(3, (94, 64)))).convert("RGB")
    want = bb.preprocess(im)
    from imgpref.scorers.backbones.resize import normalize

    x = unit_tensor(im)[None]
    rounded = normalize(resize_short_center_crop(x, 32, offsets="round").clamp(0, 1), bb.mean, bb.std)[0]
    floored = normalize(resize_short_center_crop(x, 32, offsets="floor").clamp(0, 1), bb.mean, bb.std)[0]
    assert _levels(rounded, want, bb.std) > 20 and _levels(floored, want, bb.std) <= FLOAT_TOL_LEVELS


@pytest.mark.parametrize("resize,crop", [(32, 32), (36, 32)])
def test_decode_gpu_transform_follows_the_clip_processor(resize, crop):
    bb = _backbone(resize, crop)
    transform = gpu_decode.tensor_transform(bb)
    for wh in SIZES:
        data = jpeg_bytes(3, wh)
        (u8,) = gpu_decode._decode_jpegs([data], torch.device("cpu"))  # torchvision's CPU decoder (libjpeg)
        want = bb.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))
        got = transform(u8[None])[0]
        assert got.shape == want.shape and _levels(got, want, bb.std) <= PIL_TOL_LEVELS, wh
