"""Weight-free image measures: colorfulness, contrast, exposure, sharpness, noise.

They form one `PixelStatsBackbone` whose "embedding" is the vector
`[colorfulness, contrast, exposure, sharpness, noise]` (see `MEASURES`), with one `IndexHead(i)` per measure,
so scoring all five costs one pass over the pixels.

Working resolution: every image is resized so its short side is `size` (default 256, bicubic with
anti-aliasing) and centre-cropped to `size x size`. The measures depend on resolution (sharpness and noise
especially), so a fixed working resolution makes scores comparable across image sizes.

Definitions (on the working image, RGB in [0, 1]; luminance L = 0.2125 R + 0.7154 G + 0.0721 B, the weights of
`skimage.color.rgb2gray`):

- colorfulness: Hasler & Suesstrunk (2003), metric M3, on 0-255 RGB: rg = R - G, yb = (R + G) / 2 - B,
  M3 = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2) (population std). Higher = more colourful.
- contrast: RMS contrast, the population std of L in [0, 1].
- exposure: mean well-exposedness of L, exp(-(L - 0.5)^2 / (2 * 0.2^2)) (Mertens et al. 2007), in (0, 1];
  higher = closer to mid-grey on average (fewer blown highlights / crushed shadows).
- sharpness: variance of the Laplacian of L (3x3 kernel [[0,-1,0],[-1,4,-1],[0,-1,0]], edges reflected),
  identical to `skimage.filters.laplace(L).var()`.
- noise: `skimage.restoration.estimate_sigma(L)` (wavelet-based robust estimate of Gaussian noise std).
  Lower is better. It is computed with scikit-image on CPU float64 numpy, so it is NOT differentiable
  (no gradient flows through it); the other four are pure torch and differentiable through the pixels.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from imgpref.data.images import to_rgb
from imgpref.scorers.base import Backbone, Head
from imgpref.scorers.heads import register_head

MEASURES: tuple[str, ...] = ("colorfulness", "contrast", "exposure", "sharpness", "noise")
LUMA = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray weights
EXPOSURE_SIGMA = 0.2


def luminance(rgb: Tensor) -> Tensor:
    """[B, 3, H, W] -> [B, H, W] with the weights of `skimage.color.rgb2gray`."""
    w = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1)


def colorfulness(rgb: Tensor) -> Tensor:
    """Hasler & Suesstrunk M3 of RGB in [0, 1] (computed on the 0-255 scale), [B, 3, H, W] -> [B]."""
    x = rgb * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return std + 0.3 * mean


def rms_contrast(lum: Tensor) -> Tensor:
    """Population std of luminance, [B, H, W] -> [B]."""
    return lum.flatten(1).std(1, unbiased=False)


def exposure(lum: Tensor, sigma: float = EXPOSURE_SIGMA) -> Tensor:
    """Mean Mertens well-exposedness of luminance, [B, H, W] -> [B] in (0, 1]."""
    return torch.exp(-((lum - 0.5) ** 2) / (2 * sigma**2)).flatten(1).mean(1)


def laplacian(lum: Tensor) -> Tensor:
    """3x3 Laplacian with reflected edges, as `skimage.filters.laplace` (scipy.ndimage 'reflect' mode)."""
    k = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=lum.dtype, device=lum.device)
    # scipy's 'reflect' (d c b a | a b c d) with a 1-pixel border equals torch's 'replicate'.
    x = F.pad(lum.unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(x, k.view(1, 1, 3, 3)).squeeze(1)


def sharpness(lum: Tensor) -> Tensor:
    """Variance of the Laplacian of luminance, [B, H, W] -> [B]."""
    return laplacian(lum).flatten(1).var(1, unbiased=False)


def noise_sigma(lum: Tensor) -> Tensor:
    """`skimage.restoration.estimate_sigma` per image (CPU numpy, no gradient), [B, H, W] -> [B]."""
    from skimage.restoration import estimate_sigma

    arr = lum.detach().to("cpu", torch.float64).numpy()
    vals = [float(estimate_sigma(a)) for a in arr]
    return torch.tensor(vals, dtype=lum.dtype, device=lum.device)


def resize_center_crop(images: Tensor, size: int) -> Tensor:
    """Differentiable: short side to `size` (bicubic, anti-aliased), centre crop to size x size."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        images = F.interpolate(images, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return images[..., top : top + size, left : left + size]


class PixelStatsBackbone(Backbone):
    """'Embeds' an image as `[colorfulness, contrast, exposure, sharpness, noise]` at a fixed working size."""

    has_text = False
    embed_dim = len(MEASURES)

    def __init__(self, size: int = 256):
        super().__init__()
        if int(size) < 8:
            raise ValueError(f"working size must be >= 8 pixels; got {size}")
        self.size = int(size)
        self.key = f"pixels-{self.size}"

    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL -> [3, size, size] float32 in [0, 1] (PIL bicubic resize of the short side, centre crop)."""
        image = to_rgb(image)
        w, h = image.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def pixels_to_input(self, images: Tensor) -> Tensor:
        # bicubic overshoots slightly; clamp keeps the measures' input in [0, 1] (grad is 1 inside the range)
        return resize_center_crop(images, self.size).clamp(0.0, 1.0)

    def embed_images(self, pixels: Tensor) -> Tensor:
        """Model input [B, 3, s, s] in [0, 1] -> [B, 5]; computed in float64 for exactness, cast back."""
        out_dtype = pixels.dtype if pixels.is_floating_point() else torch.float32
        x = pixels.to(torch.float64)
        lum = luminance(x)
        cols = [colorfulness(x), rms_contrast(lum), exposure(lum), sharpness(lum), noise_sigma(lum)]
        return torch.stack(cols, dim=1).to(out_dtype)

    def describe(self) -> dict[str, Any]:
        return {"type": "pixels", "size": self.size}


@register_head("index")
class IndexHead(Head):
    """Picks one coordinate of the embedding: the score of one pixel measure."""

    needs_text = False

    def __init__(self, index: int):
        super().__init__()
        self.index = int(index)

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        if img_emb.shape[-1] <= self.index:
            raise ValueError(f"IndexHead({self.index}) got embeddings of width {img_emb.shape[-1]}")
        return img_emb[:, self.index]

    def describe(self) -> dict[str, Any]:
        return {"type": "index", "index": self.index}
