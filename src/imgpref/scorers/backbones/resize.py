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


def resize_short_center_crop(images: Tensor, size: int) -> Tensor:
    """Short side to `size` (torchvision's rounding: long side int(size * long / short)), centre crop."""
    h, w = images.shape[-2:]
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    x = _interp(images, (nh, nw))
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return x[..., top : top + size, left : left + size]


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
