"""Degraded and wrong renderings of a prompt: stand-in "generations" of varied quality, and judge checks.

A variant is a rendering of a *perturbed* scene (wrong colour, count, shape, background, off-centre, cut by
the frame) and/or an image-space degradation (blur, noise, speckle, colour shift, washed out). Used to test
the gold judge's graceful degradation and, until a pretrained base model exists, as the K images per prompt
the reward-model half of the loop learns from.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from imgpref.world.scenes import COLOURS, MAX_COUNT, SHAPES, Obj, PromptSpec, Scene, parse_prompt, render, sample_scene

SCENE_ERRORS = ("colour", "count", "shape", "background", "off_centre", "cut")
PIXEL_DEGRADATIONS = ("blur", "noise", "speckle", "shift", "washed")


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of uint8 [H, W, 3] with std `sigma` px."""
    out = ndimage.gaussian_filter(img.astype(np.float64), sigma=(sigma, sigma, 0), mode="nearest")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def add_noise(img: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of std `std` (0-255 units) on every pixel and channel."""
    return np.clip(np.rint(img + rng.normal(0.0, std, img.shape)), 0, 255).astype(np.uint8)


def add_speckle(img: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Set a fraction `frac` of pixels to random colours (isolated-pixel artefacts)."""
    out = img.copy()
    m = rng.random(img.shape[:2]) < frac
    out[m] = rng.integers(0, 256, (int(m.sum()), 3))
    return out


def shift_colour(img: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Add one random RGB offset of norm `delta` (0-255 units) to the whole image (a colour cast)."""
    v = rng.normal(size=3)
    v = v / np.linalg.norm(v) * delta
    return np.clip(np.rint(img + v), 0, 255).astype(np.uint8)


def wash_out(img: np.ndarray, amount: float) -> np.ndarray:
    """Blend towards mid grey by `amount` in [0, 1] (lower contrast, shifted colours)."""
    return np.clip(np.rint((1 - amount) * img + amount * 128.0), 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """One pixel degradation by name; `strength` in [0, 1] maps to a sensible range for each kind."""
    if kind == "blur":
        return blur(img, 0.3 + 1.7 * strength)
    if kind == "noise":
        return add_noise(img, 5 + 55 * strength, rng)
    if kind == "speckle":
        return add_speckle(img, 0.02 + 0.2 * strength, rng)
    if kind == "shift":
        return shift_colour(img, 10 + 70 * strength, rng)
    if kind == "washed":
        return wash_out(img, 0.1 + 0.6 * strength)
    raise ValueError(f"unknown degradation {kind!r}; choose from {PIXEL_DEGRADATIONS}")


def _other(options, current, rng: np.random.Generator):
    rest = [o for o in options if o != current]
    return rest[int(rng.integers(len(rest)))]


def wrong_scene(spec: PromptSpec, error: str, rng: np.random.Generator, size: int = 32) -> Scene:
    """A scene that gets one thing of `spec` wrong (SCENE_ERRORS)."""
    if error == "colour":
        return sample_scene(rng, size=size, spec=replace(spec, colour=_other(
            [c for c in COLOURS if c != spec.background], spec.colour, rng)))
    if error == "count":
        return sample_scene(rng, size=size, spec=replace(spec, count=_other(range(1, MAX_COUNT + 1), spec.count, rng)))
    if error == "shape":
        return sample_scene(rng, size=size, spec=replace(spec, shape=_other(SHAPES, spec.shape, rng)))
    if error == "background":
        return sample_scene(rng, size=size, spec=replace(spec, background=_other(
            [c for c in COLOURS if c != spec.colour], spec.background, rng)))
    scene = sample_scene(rng, size=size, spec=spec)
    if error == "off_centre":
        # push the whole group towards one corner, keeping it inside the frame
        xs = [o.cx for o in scene.objects]
        ys = [o.cy for o in scene.objects]
        r = scene.objects[0].size
        sx, sy = rng.choice([-1, 1], size=2)
        dx = (r + 1 - min(xs)) if sx < 0 else (size - r - 1 - max(xs))
        dy = (r + 1 - min(ys)) if sy < 0 else (size - r - 1 - max(ys))
        return Scene(tuple(replace(o, cx=o.cx + dx, cy=o.cy + dy) for o in scene.objects), scene.background, size)
    if error == "cut":
        # move one object so that about half of it lies outside the frame
        o = scene.objects[0]
        side = int(rng.integers(4))
        cx, cy = [(0.0, o.cy), (size, o.cy), (o.cx, 0.0), (o.cx, size)][side]
        moved = Obj(o.shape, o.colour, o.size, cx, cy)
        return Scene((moved,) + scene.objects[1:], scene.background, size)
    raise ValueError(f"unknown scene error {error!r}; choose from {SCENE_ERRORS}")


def stand_in_generations(prompt: str, k: int, rng: np.random.Generator, size: int = 32,
                         p_correct: float = 0.35) -> list[np.ndarray]:
    """K images for a prompt of mixed quality: correct renderings, wrong scenes, pixel degradations.

    Each image is correct with probability `p_correct`, else gets one scene error; then, with
    probability 0.5, one pixel degradation of random strength.
    """
    spec = parse_prompt(prompt)
    out = []
    for _ in range(k):
        if rng.random() < p_correct:
            scene = sample_scene(rng, size=size, spec=spec)
        else:
            scene = wrong_scene(spec, SCENE_ERRORS[int(rng.integers(len(SCENE_ERRORS)))], rng, size)
        img = render(scene)
        if rng.random() < 0.5:
            kind = PIXEL_DEGRADATIONS[int(rng.integers(len(PIXEL_DEGRADATIONS)))]
            img = degrade(img, kind, float(rng.random()), rng)
        out.append(img)
    return out
