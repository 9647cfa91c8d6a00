"""Differentiable resize / crop / pad / normalise, matching the PIL eval transforms of open_clip and CLIP."""
from __future__ import annotations

from typing import Sequence

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
    """Long side to `size`, then pad (centred, extra pixel right/bottom) with `fill` to size x size."""
    h, w = images.shape[-2:]
    ratio = max(h, w) / size
    nh, nw = round(h / ratio), round(w / ratio)
    x = _interp(images, (nh, nw))
    ph, pw = size - nh, size - nw
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
    return x


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(list(mean), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def pixels_to_clip_input(images: Tensor, size: int, mean, std, resize_mode: str = "center_crop") -> Tensor:
    """[B, 3, H, W] in [0, 1] -> normalised model input [B, 3, size, size], differentiable."""
    if resize_mode == "center_crop":
        x = resize_short_center_crop(images, size)
    elif resize_mode == "pad":
        x = resize_long_pad(images, size)
    else:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}; got {resize_mode!r}")
    # bicubic overshoots; the PIL path saturates to [0, 255], so clamp the same way
    return normalize(x.clamp(0.0, 1.0), mean, std)
