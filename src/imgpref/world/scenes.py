"""The procedural world's scene grammar: objects of one shape and colour, 1-3 of them, on a background colour.

A scene reads as one prompt: "two red circles on a blue background". Everything is deterministic from a
seed (a numpy Generator). Images are 32 px by default so a tiny diffusion model trains on CPU in minutes;
object sizes (half-extent 4-8 px, smaller when there are more objects) keep shapes recognisable at 32 px.
Objects never overlap and keep a gap of at least `_GAP` px, so each is one connected blob of its colour.

Rendering supersamples 4x and box-averages, so edges are anti-aliased (smoother targets for a diffusion
model) while interior pixels keep the exact named colour.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from typing import Iterable

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 220, 40),
    "purple": (140, 50, 190),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three")
MAX_COUNT = 3
_SUPERSAMPLE = 4
_GAP = 2            # minimum free pixels between two objects' extents
_MARGIN = 1         # minimum free pixels between an object and the frame
# (min, max) half-extent in px at 32 px, per count: three objects must fit without touching
_SIZE_RANGE = {1: (6, 9), 2: (5, 7), 3: (4, 6)}

Combo = tuple[str, str]          # (colour, shape)


@dataclass(frozen=True)
class Obj:
    """One object: its shape, colour name, half-extent `size` (px) and centre (cx, cy) in px."""

    shape: str
    colour: str
    size: float
    cx: float
    cy: float


@dataclass(frozen=True)
class Scene:
    """Objects (same shape and colour, 1-3 of them) on a background colour; `size` is the image side (px)."""

    objects: tuple[Obj, ...]
    background: str
    size: int = 32

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def colour(self) -> str:
        return self.objects[0].colour

    @property
    def shape(self) -> str:
        return self.objects[0].shape

    @property
    def spec(self) -> "PromptSpec":
        return PromptSpec(self.count, self.colour, self.shape, self.background)


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for."""

    count: int
    colour: str
    shape: str
    background: str

    @property
    def combo(self) -> Combo:
        return (self.colour, self.shape)


def all_combos() -> list[Combo]:
    """Every (colour, shape) combination, in a fixed order."""
    return list(product(COLOURS, SHAPES))


def split_combos(seed: int = 0, n_heldout: int = 4) -> tuple[list[Combo], list[Combo]]:
    """(train_combos, heldout_combos): colour x shape combinations held out of pretraining.

    Every colour and every shape still occurs in the training combos (with other partners), so a held-out
    prompt is a new *combination* of known words, not a new word. At most one held-out combo per colour.
    """
    combos = all_combos()
    if not 0 <= n_heldout <= len(COLOURS):
        raise ValueError(f"n_heldout={n_heldout} must be between 0 and {len(COLOURS)}")
    rng = np.random.default_rng([seed, 7919])
    colours = list(COLOURS)
    chosen = rng.permutation(len(colours))[:n_heldout]
    # cycle shapes so held-out combos spread over shapes and each shape keeps many training partners
    offset = int(rng.integers(len(SHAPES)))
    heldout = [(colours[c], SHAPES[(offset + i) % len(SHAPES)]) for i, c in enumerate(sorted(chosen))]
    train = [c for c in combos if c not in heldout]
    return train, heldout


def _check_combos(combos: Iterable[Combo] | None) -> list[Combo]:
    if combos is None:
        return all_combos()
    out = [(str(c), str(s)) for c, s in combos]
    bad = [c for c in out if c[0] not in COLOURS or c[1] not in SHAPES]
    if bad or not out:
        raise ValueError(f"combos must be non-empty (colour, shape) pairs from COLOURS x SHAPES; bad: {bad[:3]}")
    return out


def _place(rng: np.random.Generator, count: int, size: int, max_tries: int = 200) -> list[tuple[float, float, float]]:
    """Non-overlapping (half_extent, cx, cy) for `count` objects fully inside a size x size frame."""
    scale = size / 32.0
    lo, hi = _SIZE_RANGE[count]
    for _ in range(max_tries):
        r = float(rng.uniform(lo, hi)) * scale
        placed: list[tuple[float, float, float]] = []
        for _k in range(count):
            for _t in range(50):
                cx = float(rng.uniform(r + _MARGIN, size - r - _MARGIN))
                cy = float(rng.uniform(r + _MARGIN, size - r - _MARGIN))
                # Chebyshev distance on extents: square bounding boxes never touch
                if all(max(abs(cx - x), abs(cy - y)) >= 2 * r + _GAP * scale for _, x, y in placed):
                    placed.append((r, cx, cy))
                    break
            else:
                break
        if len(placed) == count:
            return placed
    raise RuntimeError(f"could not place {count} objects in {size} px")  # pragma: no cover - sizes are chosen to fit


def sample_scene(
    rng: np.random.Generator, *, size: int = 32, combos: Iterable[Combo] | None = None,
    spec: PromptSpec | None = None,
) -> Scene:
    """A random scene; (colour, shape) drawn from `combos` (default: all), background != object colour.

    With `spec`, count/colour/shape/background are fixed and only sizes and positions are drawn.
    """
    if size < 16:
        raise ValueError(f"size={size} is too small; use >= 16 px")
    if spec is None:
        allowed = _check_combos(combos)
        colour, shape = allowed[int(rng.integers(len(allowed)))]
        count = int(rng.integers(1, MAX_COUNT + 1))
        bgs = [c for c in COLOURS if c != colour]
        background = bgs[int(rng.integers(len(bgs)))]
    else:
        count, colour, shape, background = spec.count, spec.colour, spec.shape, spec.background
    objs = tuple(Obj(shape, colour, r, cx, cy) for r, cx, cy in _place(rng, count, size))
    return Scene(objs, background, size)


def shape_mask(shape: str, size: float, cx: float, cy: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean mask of one shape at sample coordinates (xs, ys) in px (pixel centres)."""
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= size * size
    if shape == "square":
        # a square with the circle's area would look small; half side 0.85 r keeps areas comparable
        h = 0.85 * size
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":
        # upward isosceles triangle: apex at top, base at the bottom, inside the extent box
        top, bottom = cy - size, cy + size
        t = (ys - top) / (bottom - top)                       # 0 at apex, 1 at base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * size)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def render(scene: Scene, size: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] image of the scene (deterministic; anti-aliased by 4x supersampling)."""
    side = scene.size if size is None else int(size)
    k = side / scene.size
    s = _SUPERSAMPLE
    coords = (np.arange(side * s) + 0.5) / s                    # sample positions in output px
    xs, ys = np.meshgrid(coords, coords)
    img = np.empty((side * s, side * s, 3), dtype=np.float64)
    img[:] = COLOURS[scene.background]
    for o in scene.objects:
        m = shape_mask(o.shape, o.size * k, o.cx * k, o.cy * k, xs, ys)
        img[m] = COLOURS[o.colour]
    img = img.reshape(side, s, side, s, 3).mean(axis=(1, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def caption(scene: Scene | PromptSpec) -> str:
    """The scene's prompt: "two red circles on a blue background"."""
    spec = scene.spec if isinstance(scene, Scene) else scene
    noun = spec.shape + ("s" if spec.count > 1 else "")
    article = "an" if spec.background[0] in "aeiou" else "a"
    return f"{COUNT_WORDS[spec.count - 1]} {spec.colour} {noun} on {article} {spec.background} background"


_WORD_COUNTS = {"one": 1, "a": 1, "an": 1, "two": 2, "three": 3, "1": 1, "2": 2, "3": 3}
_PROMPT_RE = re.compile(r"^\s*(\w+)\s+(\w+)\s+(\w+?)(s?)\s+on\s+an?\s+(\w+)\s+background\s*\.?\s*$", re.IGNORECASE)


def parse_prompt(prompt: str) -> PromptSpec:
    """PromptSpec of a world prompt; ValueError naming the prompt when it is not one."""
    m = _PROMPT_RE.match(str(prompt))
    if m is None:
        raise ValueError(f"not a world prompt: {prompt!r}; expected e.g. 'two red circles on a blue background'")
    cw, colour, shape, _plural, bg = (g.lower() for g in m.groups())
    if cw not in _WORD_COUNTS:
        raise ValueError(f"unknown count {cw!r} in prompt {prompt!r}; use one of {COUNT_WORDS}")
    if colour not in COLOURS or bg not in COLOURS:
        bad = colour if colour not in COLOURS else bg
        raise ValueError(f"unknown colour {bad!r} in prompt {prompt!r}; use one of {tuple(COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} in prompt {prompt!r}; use one of {SHAPES}")
    return PromptSpec(_WORD_COUNTS[cw], colour, shape, bg)


def sample_prompts(n: int, seed: int, combos: Iterable[Combo] | None = None) -> list[str]:
    """n random prompts (with repeats possible) over `combos`; deterministic from seed."""
    rng = np.random.default_rng([seed, 31])
    return [caption(sample_scene(rng, combos=combos)) for _ in range(n)]


def render_prompt(prompt: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A correct rendering of a prompt (random sizes and positions drawn from rng)."""
    return render(sample_scene(rng, size=size, spec=parse_prompt(prompt)))


FLAW_KINDS: tuple[str, ...] = ("colour", "count", "background")


def flaw_scene(scene: Scene, kind: str, rng: np.random.Generator) -> Scene:
    """`scene` with one part its caption names made wrong: the objects' colour, their count, or the background.

    The flawed scene keeps the original's caption in `sample_dataset(..., caption_noise=p)`, as the mislabelled
    share of a web-scraped training set does. (The world's base learns it as weaker prompt following overall, not
    as a separate bad mode: benchmarks/RESULTS.md "world_align".)
    """
    spec = scene.spec
    if kind == "colour":
        # a colour that is neither the named one nor the background's, so the objects stay visible
        choices = [c for c in COLOURS if c not in (spec.colour, spec.background)]
        colour = choices[int(rng.integers(len(choices)))]
        return Scene(tuple(Obj(o.shape, colour, o.size, o.cx, o.cy) for o in scene.objects), scene.background,
                     scene.size)
    if kind == "background":
        choices = [c for c in COLOURS if c not in (spec.colour, spec.background)]
        return Scene(scene.objects, choices[int(rng.integers(len(choices)))], scene.size)
    if kind == "count":
        counts = [c for c in range(1, MAX_COUNT + 1) if c != spec.count]
        wrong = PromptSpec(counts[int(rng.integers(len(counts)))], spec.colour, spec.shape, spec.background)
        return sample_scene(rng, size=scene.size, spec=wrong)
    raise ValueError(f"unknown flaw {kind!r}; choose from {FLAW_KINDS}")


def sample_dataset(
    n: int, seed: int, size: int = 32, combos: Iterable[Combo] | None = None, caption_noise: float = 0.0,
) -> tuple[np.ndarray, list[str]]:
    """(images uint8 [N, H, W, 3], prompts) of n random scenes; deterministic from seed.

    With `caption_noise` p > 0, a share p of the images is rendered from a flawed scene (`flaw_scene`, one of
    `FLAW_KINDS` at random) while its prompt still describes the unflawed one. The flaws draw from their own
    generator, so the prompts, and every image left unflawed, are those of `caption_noise=0`.
    """
    if not 0.0 <= caption_noise < 1.0:
        raise ValueError(f"caption_noise must lie in [0, 1); got {caption_noise}")
    rng = np.random.default_rng([seed, 17])
    flaws = np.random.default_rng([seed, 19])
    allowed = _check_combos(combos)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    prompts: list[str] = []
    for i in range(n):
        scene = sample_scene(rng, size=size, combos=allowed)
        prompts.append(caption(scene))
        if caption_noise > 0 and flaws.random() < caption_noise:
            scene = flaw_scene(scene, FLAW_KINDS[int(flaws.integers(len(FLAW_KINDS)))], flaws)
        images[i] = render(scene)
    return images, prompts
