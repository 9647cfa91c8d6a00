"""Differentiable resize / crop / pad / normalise: close to the PIL eval transforms of open_clip and CLIP
(centre crop), and exactly HPSv2's tensor transform (pad)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

RESIZE_MODES = ("center_crop", "pad")


def _interp(images: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)


CROP_OFFSETS = ("round", "floor")


def short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) with the short side at `size`, the long side int(size * long / short) (torchvision's and
    transformers' rounding)."""
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def crop_offset(extra: int, offsets: str = "round") -> int:
    """Where a centre crop starts when it drops `extra` pixels on one axis, with an odd `extra` split as
    torchvision's CenterCrop does (`round`: round half to even of extra / 2, used by open_clip and BLIP) or as
    transformers' CLIP image processors do (`floor`: extra // 2). Python rounds halves to even, so the two differ
    by one pixel when extra % 4 == 3 (a margin of 15: 8 vs 7; of 17: 8 and 8)."""
    if offsets == "round":
        return int(round(extra / 2.0))
    if offsets == "floor":
        return extra // 2
    raise ValueError(f"offsets must be one of {CROP_OFFSETS}; got {offsets!r}")


def resize_short_center_crop(images: Tensor, size: int, crop: int | None = None, offsets: str = "round") -> Tensor:
    """Short side to `size` (`short_side_size`), then a centre crop of `crop` x `crop` (default `size`) placed
    as `crop_offset(offsets)` says."""
    crop = size if crop is None else int(crop)
    nh, nw = short_side_size(*images.shape[-2:], size)
    x = _interp(images, (nh, nw))
    top, left = crop_offset(nh - crop, offsets), crop_offset(nw - crop, offsets)
    return x[..., top : top + crop, left : left + crop]


def resize_long_pad(images: Tensor, size: int, fill: float = 0.0) -> Tensor:
    """HPS's `ResizeMaxSize` on a float tensor: long side to `size`, then pad with `fill` to size x size.

    As HPSv2 (its eval transform converts to a tensor first, then resizes the tensor): scale = size / long side,
    new sides round(side * scale), torchvision's tensor resize (bicubic, antialias on; the same kernel as
    `F.interpolate(antialias=True)`), no clamping of the bicubic overshoot, padding centred with the extra pixel
    right/bottom, in [0, 1] units (fill 0 = black), before normalisation. One deviation: HPS skips resize and
    padding when the long side already equals `size`, which leaves a non-square input its model cannot take;
    here such an image is padded.
    """
    h, w = images.shape[-2:]
    scale = size / float(max(h, w))
    x = images
    if scale != 1.0:
        nh, nw = round(h * scale), round(w * scale)
        x = _interp(images, (nh, nw))
    else:
        nh, nw = h, w
    ph, pw = size - nh, size - nw
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
    return x


def unit_tensor(image) -> Tensor:
    """PIL RGB image -> float32 [3, H, W] in [0, 1] (torchvision's `to_tensor`: uint8 / 255)."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32).div(255)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(list(mean), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def pixels_to_clip_input(images: Tensor, size: int, mean, std, resize_mode: str = "center_crop") -> Tensor:
    """[B, 3, H, W] in [0, 1] -> normalised model input [B, 3, size, size], differentiable."""
    if resize_mode == "center_crop":
        # bicubic overshoots; the PIL path saturates to [0, 255], so clamp the same way
        x = resize_short_center_crop(images, size).clamp(0.0, 1.0)
    elif resize_mode == "pad":
        x = resize_long_pad(images, size)  # HPS resizes the float tensor and does not clamp
    else:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}; got {resize_mode!r}")
    return normalize(x, mean, std)
