"""The world's gold judge: hand-written, on pixels only, so it judges any image (rendered, generated, degraded).

`judge(images, prompts)` returns per-image arrays in [0, 1]:

fidelity = 0.5 * mean + 0.5 * product of four components, each smooth so a partly right image gets partial
credit (the mean keeps a gradient when one part is wrong; the product makes any wrong part cost ~half):
  colour      the named object colour covers an object-like area: `1 - exp(-mass / 10 px)`, where mass is the
              summed soft colour membership, times a penalty when it fills more than 35% of the frame;
  count       connected blobs of that colour (membership > 0.5, 8-connected, containing a 3x3 block),
              each weighted by `min(1, area / 12 px)^2` so specks count little; `exp(-(n - count)^2 / 0.5)`;
  shape       per blob, three features against the named shape's (SHAPE_TARGET): the fill ratio (blob
              pixels / bounding-box pixels: circle ~0.8, square ~1, triangle ~0.56), the log ratio of the
              top half's area to the bottom half's (0 for circle and square, ~-0.92 for the upward
              triangle) and the share of the box's 4 corner pixels filled (circle 0, square 1, triangle
              0.5); `exp(-sum(((feature - target) / (0.15, 0.4, 0.4))^2))`, averaged with the blob weights;
  background  mean soft membership of the background colour on the 1-px frame border.
aesthetics = mean of four components:
  in_frame    `exp(-10 * share of the object colour's mass on the frame border)`: objects are not cut;
  centred     `exp(-(d / (H/4))^2)`, d = distance of the object mass's centroid from the image centre;
  contrast    `1 - exp(-(g / 45)^2)`, g = mean of the top 3% colour-gradient magnitudes (0-255 units):
              edges are crisp (blur and washed-out colours lower it);
  clean       `exp(-(e / 10)^2)`, e = mean over pixels of the colour distance to the *closest* of the 8
              neighbours: ~0 for flat regions, edges and corners (some neighbour continues them), large for
              isolated pixels and noise (speckle).
utility = 0.7 * fidelity + 0.3 * aesthetics (UTILITY_WEIGHTS).

Soft colour membership of a pixel to a named colour is `sigmoid((38 - d) / 6)` with d the RGB distance in
0-255 units: the closest pair of palette colours (yellow/orange) is 83 apart, so a palette colour has
membership < 0.001 in its neighbour, while a colour shifted by 30 keeps ~0.8. Colour tests take the larger
membership of the raw and the 3x3-median-filtered image (the median fills noise holes, the raw keeps square
corners), and keep only components thicker than 1 px; the speckle measure sees the raw image.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from imgpref.world.scenes import COLOURS, parse_prompt

UTILITY_WEIGHTS = (0.7, 0.3)           # (fidelity, aesthetics)
FIDELITY_PARTS = ("colour", "count", "shape", "background")
AESTHETIC_PARTS = ("in_frame", "centred", "contrast", "clean")
# (fill ratio, log top/bottom area, corners filled) of each rendered shape after thresholding at 32 px
SHAPE_TARGET = {"circle": (0.80, 0.0, 0.0), "square": (1.0, 0.0, 1.0), "triangle": (0.56, -0.92, 0.5)}
_SHAPE_SCALE = np.array([0.15, 0.4, 0.4])
_MEMBER_RADIUS, _MEMBER_WIDTH = 38.0, 6.0
_MIN_BLOB = 12.0                       # px: a blob this large counts as a whole object
_EIGHT = np.ones((3, 3), dtype=bool)


def to_uint8_hwc(images: Any) -> np.ndarray:
    """Images as uint8 [B, H, W, 3]: accepts uint8 [B,H,W,3] / [H,W,3] arrays, float arrays or tensors
    [B, 3, H, W] in [0, 1], or a sequence of PIL images."""
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        return np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    if hasattr(images, "detach"):                       # torch tensor, without importing torch here
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"images must be [B, H, W, 3] uint8 or [B, 3, H, W] float in [0, 1]; got shape {arr.shape}")
    if arr.dtype == np.uint8:
        if arr.shape[-1] != 3:
            raise ValueError(f"uint8 images must be [B, H, W, 3]; got shape {arr.shape}")
        return arr
    if arr.shape[1] != 3:
        raise ValueError(f"float images must be [B, 3, H, W] in [0, 1]; got shape {arr.shape}")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"float images must lie in [0, 1]; got min {lo:.4f}, max {hi:.4f}")
    return np.clip(np.rint(arr.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)


def membership(img: np.ndarray, colour: str) -> np.ndarray:
    """Soft membership [..., H, W] in (0, 1) of each pixel of float RGB `img` (0-255) to a named colour."""
    d = np.linalg.norm(img - np.asarray(COLOURS[colour], dtype=np.float64), axis=-1)
    return 1.0 / (1.0 + np.exp(-(_MEMBER_RADIUS - d) / _MEMBER_WIDTH))


def _border(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
    return m


def _with_core(mask: np.ndarray) -> np.ndarray:
    """The 8-connected components of `mask` that contain a full 3x3 block, kept whole.

    Drops 1-px-thin structures: anti-aliased edges between two other colours can blend into the named one
    (red|yellow edges look orange) and noise pixels can match it; real objects keep every pixel (tips too).
    """
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return mask
    core = ndimage.binary_erosion(mask, structure=_EIGHT)
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[core])] = True
    keep[0] = False
    return keep[labels]


def _shape_features(blob: np.ndarray) -> tuple[float, float, float]:
    """(fill ratio, log(top-half area / bottom-half area), share of the 4 box corners filled) of a boolean
    blob cropped to its bounding box."""
    h = blob.shape[0]
    rows = blob.sum(axis=1).astype(np.float64)
    top = float((rows * np.clip(h / 2 - np.arange(h), 0.0, 1.0)).sum())   # odd heights split the middle row
    bottom = float(rows.sum()) - top
    corners = float(blob[0, 0]) + float(blob[0, -1]) + float(blob[-1, 0]) + float(blob[-1, -1])
    return float(rows.sum()) / blob.size, float(np.log((top + 0.5) / (bottom + 0.5))), corners / 4.0


def _blobs(mem: np.ndarray, shape: str) -> tuple[float, float]:
    """(soft count, weighted shape score) of the connected blobs where membership > 0.5 (with a core)."""
    labels, n = ndimage.label(_with_core(mem > 0.5), structure=_EIGHT)
    if n == 0:
        return 0.0, 0.0
    area = ndimage.sum_labels(np.ones_like(mem), labels, np.arange(1, n + 1))
    weights = np.minimum(1.0, area / _MIN_BLOB) ** 2
    target = np.asarray(SHAPE_TARGET[shape])
    scores = []
    for k, sl in enumerate(ndimage.find_objects(labels)):
        z = (np.asarray(_shape_features(labels[sl] == k + 1)) - target) / _SHAPE_SCALE
        scores.append(np.exp(-(z ** 2).sum()))
    return float(weights.sum()), float((weights * np.asarray(scores)).sum() / weights.sum())


def _contrast(img: np.ndarray) -> float:
    gy, gx = np.gradient(img, axis=(0, 1))
    g = np.sqrt((gx ** 2 + gy ** 2).sum(-1)).ravel()
    k = max(1, int(round(0.03 * g.size)))
    top = np.partition(g, g.size - k)[-k:]
    return float(1.0 - np.exp(-((top.mean() / 45.0) ** 2)))


def _isolation(img: np.ndarray) -> float:
    """Mean over pixels of the RGB distance to the closest of the 8 neighbours (edge-replicated frame)."""
    h, w = img.shape[:2]
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    dists = [np.linalg.norm(img - pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], axis=-1)
             for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    return float(np.min(dists, axis=0).mean())


def judge_one(image: np.ndarray, prompt: str) -> dict[str, float]:
    """All components for one uint8 [H, W, 3] image and its prompt (see the module docstring)."""
    spec = parse_prompt(prompt)
    raw = image.astype(np.float64)
    h, w = raw.shape[:2]
    den = ndimage.median_filter(raw, size=(3, 3, 1), mode="nearest")
    border = _border(h, w)
    soft = np.maximum(membership(raw, spec.colour), membership(den, spec.colour))
    mem = soft * _with_core(soft > 0.1)
    mass = float(mem.sum())
    frac = mass / (h * w)
    overfill = float(np.clip((0.65 - frac) / 0.3, 0.0, 1.0))
    colour = (1.0 - np.exp(-mass / 10.0)) * overfill
    n_soft, shape = _blobs(mem, spec.shape)
    count = float(np.exp(-((n_soft - spec.count) ** 2) / 0.5))
    background = float(membership(den, spec.background)[border].mean())

    if mass > 1e-6:
        in_frame = float(np.exp(-10.0 * mem[border].sum() / mass))
        ys, xs = np.mgrid[0:h, 0:w]
        cy, cx = (mem * (ys + 0.5)).sum() / mass, (mem * (xs + 0.5)).sum() / mass
        d = np.hypot(cy - h / 2, cx - w / 2)
        centred = float(np.exp(-((d / (h / 4)) ** 2)))
    else:
        in_frame = centred = 0.0
    contrast = _contrast(raw)
    clean = float(np.exp(-((_isolation(raw) / 10.0) ** 2)))

    out = {"colour": float(colour), "count": count, "shape": shape, "background": background,
           "in_frame": in_frame, "centred": centred, "contrast": contrast, "clean": clean}
    parts = [out[k] for k in FIDELITY_PARTS]
    out["fidelity"] = 0.5 * float(np.mean(parts)) + 0.5 * float(np.prod(parts))
    out["aesthetics"] = float(np.mean([out[k] for k in AESTHETIC_PARTS]))
    out["utility"] = UTILITY_WEIGHTS[0] * out["fidelity"] + UTILITY_WEIGHTS[1] * out["aesthetics"]
    return out


def judge(images: Any, prompts: str | Sequence[str]) -> dict[str, np.ndarray]:
    """Gold judgement of images against prompts: dict of float arrays [B] in [0, 1].

    Keys: fidelity, aesthetics, utility and every component (FIDELITY_PARTS, AESTHETIC_PARTS). `images`:
    see `to_uint8_hwc`; `prompts`: one per image, or one string for all.
    """
    arr = to_uint8_hwc(images)
    plist = [prompts] * len(arr) if isinstance(prompts, str) else list(prompts)
    if len(plist) != len(arr):
        raise ValueError(f"got {len(arr)} images but {len(plist)} prompts; pass one prompt per image")
    rows = [judge_one(im, p) for im, p in zip(arr, plist)]
    keys = rows[0].keys() if rows else ("fidelity", "aesthetics", "utility", *FIDELITY_PARTS, *AESTHETIC_PARTS)
    return {k: np.asarray([r[k] for r in rows], dtype=np.float64) for k in keys}


def gold_utility(images: Any, prompts: str | Sequence[str]) -> np.ndarray:
    """Gold utility [B] (0.7 fidelity + 0.3 aesthetics)."""
    return judge(images, prompts)["utility"]
