"""Alignment in the world, judged by gold: base vs aligned on held-out prompts with the same seeds.

`BaseSamples` generates the base's images once (they are reused for every aligned model: same prompts, same
seeds, same sampler), `compare_to_base` generates the aligned model's and reports, for the gold judge and an
optional proxy scorer (the reward model that labelled the pairs):

- gold win rate of aligned over base on the gold utility (ties half) with the 95% percentile bootstrap interval
  over prompts (`imgpref.align.evaluate.bootstrap_win_rate`, as `imgpref align eval`);
- proxy win rate (same comparisons, scored by the proxy);
- mean gold fidelity and utility before and after.

`scored_grid` draws base | aligned with the gold and proxy scores under each image (the demo's grid).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw


@dataclass
class BaseSamples:
    """The base pipeline's images for `prompts` x `seeds` (seed of image k of prompt i: base_seed + i*seeds + k)."""

    pipe: Any
    prompts: list[str]
    seeds: int = 4
    base_seed: int = 1_000_000
    sample: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from imgpref.world.base_model import SAMPLE_SETTINGS
        from imgpref.world.judge import judge

        self.sample = {**SAMPLE_SETTINGS, "batch_size": 64, **self.sample}
        self.gens = self.generate(self.pipe)
        self.gold = judge(self.gens.images, self.gens.prompts)
        self._proxy: dict[int, np.ndarray] = {}

    def generate(self, pipe: Any):
        """Images of `pipe` for the same prompts, seeds and sampler as the base's."""
        from imgpref.align.generate import generate_images

        return generate_images(pipe, self.prompts, self.seeds, base_seed=self.base_seed, **self.sample)

    def proxy(self, scorer: Any) -> np.ndarray:
        """Proxy rewards of the base images (computed once per scorer)."""
        if id(scorer) not in self._proxy:
            self._proxy[id(scorer)] = proxy_rewards(scorer, self.gens.images, self.gens.prompts)
        return self._proxy[id(scorer)]


def proxy_rewards(scorer: Any, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
    """Rewards of one scorer (`as_reward`, sign-adjusted) for float images [N, 3, H, W] in [0, 1]."""
    from imgpref.align.rewards import score_images

    return next(iter(score_images([scorer], images, prompts).values()))


def compare_to_base(base: BaseSamples, aligned: Any, proxy: Any = None, *, n_boot: int = 2000) -> dict[str, Any]:
    """Gold (and proxy) comparison of `aligned` (a pipeline or an `imgpref align` output folder) with the base."""
    from imgpref.align.evaluate import bootstrap_win_rate, comparison_outcomes, load_aligned
    from imgpref.world.judge import judge

    pipe = load_aligned(aligned, base.pipe)
    gens = base.generate(pipe)
    gold = judge(gens.images, gens.prompts)
    shape = (len(base.prompts), base.seeds)
    win, lo, hi = bootstrap_win_rate(comparison_outcomes(gold["utility"], base.gold["utility"]).reshape(shape),
                                     n_boot=n_boot)
    out: dict[str, Any] = {
        "gold_win": win, "gold_ci": [lo, hi],
        "fidelity_base": float(base.gold["fidelity"].mean()), "fidelity_aligned": float(gold["fidelity"].mean()),
        "utility_base": float(base.gold["utility"].mean()), "utility_aligned": float(gold["utility"].mean()),
        "n_prompts": shape[0], "n_seeds": shape[1],
    }
    if proxy is not None:
        pa = proxy_rewards(proxy, gens.images, gens.prompts)
        out["proxy_win"] = float(comparison_outcomes(pa, base.proxy(proxy)).mean())
        out["proxy_base"], out["proxy_aligned"] = float(base.proxy(proxy).mean()), float(pa.mean())
        out["proxy_values"] = pa
    out["images"], out["gold"] = gens.images, gold  # per image, for grids
    return out


def world_clip_scorer(clip_dir: str | Any):
    """Zero-shot proxy: cosine(image, prompt) in the world CLIP (CLIPScore's form, scale 1), as a Scorer."""
    from imgpref.train.build import build_scorer

    return build_scorer({"name": "world-clip", "needs_prompt": True, "head": {"type": "cosine", "scale": 1.0},
                         "backbone": {"type": "hf_clip", "source": str(clip_dir)}})


def scored_grid(base_images: torch.Tensor, aligned_images: torch.Tensor, prompts: Sequence[str],
                scores: Sequence[tuple[str, np.ndarray, np.ndarray]], *, cell: int = 96,
                label_width: int = 250) -> Image.Image:
    """Grid: one row per prompt, columns base | aligned, each image with its scores printed under it.

    scores: (name, base values [n], aligned values [n]) per score line, e.g. ("gold", ..., ...).
    """
    from imgpref.align.generate import to_pil

    n = base_images.shape[0]
    text_h = 12 * len(scores) + 2
    header, row_h = 18, cell + text_h + 6
    grid = Image.new("RGB", (label_width + 2 * (cell + 8), header + n * row_h), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((label_width + 4, 3), "base", fill="black")
    draw.text((label_width + cell + 12, 3), "aligned", fill="black")
    for r in range(n):
        y = header + r * row_h
        # the whole prompt, wrapped to the label column (PIL's default font is ~6 px per character)
        lines = textwrap.wrap(prompts[r], max(8, (label_width - 8) // 6)) or [""]
        top = y + max(0, (cell - 12 * len(lines)) // 2)
        for i, line in enumerate(lines):
            draw.text((4, top + 12 * i), line, fill="black")
        for c, imgs in enumerate((base_images, aligned_images)):
            x = label_width + 4 + c * (cell + 8)
            grid.paste(to_pil(imgs[r]).resize((cell, cell), Image.NEAREST), (x, y))
            for s, (name, vb, va) in enumerate(scores):
                v = (vb, va)[c][r]
                draw.text((x, y + cell + 2 + 12 * s), f"{name} {float(v):.2f}", fill="black")
    return grid


def alignment_prompts(seed: int, n: int, exclude: Sequence[str] = (), *, combos: str = "all") -> list[str]:
    """`n` distinct prompts for `imgpref align pairs`, none of them in `exclude` (the held-out evaluation prompts).

    combos: "all" draws from every colour x shape combination (held-out combos were unseen in *pretraining*
    only; the evaluation prompts stay unseen by alignment), "train" from the pretraining combos only.
    """
    from imgpref.world.scenes import caption, sample_scene, split_combos

    if combos not in ("all", "train"):
        raise ValueError(f"combos must be 'all' or 'train'; got {combos!r}")
    pool = None if combos == "all" else split_combos(0)[0]
    rng = np.random.default_rng([seed, 707])
    taken, out = set(exclude), []
    for _ in range(200 * max(n, 1)):
        if len(out) == n:
            return out
        p = caption(sample_scene(rng, combos=pool))
        if p not in taken:
            taken.add(p)
            out.append(p)
    raise ValueError(f"could not draw {n} distinct alignment prompts outside the {len(taken) - len(out)} excluded; "
                     "ask for fewer")
